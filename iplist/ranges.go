package iplist

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// Range is an inclusive interval of addresses of one family.
type Range struct {
	From, To netip.Addr
}

// Ranges returns the list as sorted, disjoint intervals, IPv4 first, for
// engines that match addresses themselves (such as nftables interval
// sets). "*" yields the whole IPv4 and IPv6 spaces. A glob that is no
// single interval ("10.*.*.1") cannot be written so: the error names
// every such pattern. A nil list yields no ranges.
func (l *List) Ranges() ([]Range, error) {
	if l == nil {
		return nil, nil
	}
	if len(l.globText) > 0 {
		return nil, fmt.Errorf("ip pattern %s: a glob that is not one contiguous block (write it as CIDRs or ranges)", quoteAll(l.globText))
	}
	if l.all {
		return []Range{
			{netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})},
			{netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})},
		}, nil
	}
	out := make([]Range, 0, len(l.v4)+len(l.v6))
	for _, r := range l.v4 {
		var lo, hi [4]byte
		binary.BigEndian.PutUint32(lo[:], r.lo)
		binary.BigEndian.PutUint32(hi[:], r.hi)
		out = append(out, Range{netip.AddrFrom4(lo), netip.AddrFrom4(hi)})
	}
	for _, r := range l.v6 {
		out = append(out, Range{u128Addr(r.lo), u128Addr(r.hi)})
	}
	return out, nil
}

func u128Addr(v u128) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

func quoteAll(ps []string) string {
	q := make([]string, len(ps))
	for i, p := range ps {
		q[i] = fmt.Sprintf("%q", p)
	}
	return strings.Join(q, ", ")
}
