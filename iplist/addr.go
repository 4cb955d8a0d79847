package iplist

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Addresses and intervals: parsing exact addresses with precise errors,
// and the integer forms of addresses that the sorted, merged intervals of
// a List are made of.

// v4Range is a closed interval of IPv4 addresses as big-endian integers.
type v4Range struct{ lo, hi uint32 }

// u128 is an IPv6 address as a big-endian 128-bit integer. Comparing two
// uint64 halves is much cheaper than comparing netip.Addr values or byte
// arrays in the hot binary search.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// compare orders a and b like cmp.Compare, for sorting.

func (a u128) compare(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// next returns a+1 and false, or 0 and true when a is the maximum value.
func (a u128) next() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return u128{}, true
		}
	}
	return u128{hi, lo}, false
}

// v6Range is a closed interval of IPv6 addresses.
type v6Range struct{ lo, hi u128 }

// parseAddr parses an exact IPv4 or IPv6 address without unmapping it (CIDR
// parsing needs to know about the mapping to adjust the prefix length).
// IPv4 is parsed here rather than by netip so that errors can say precisely
// what is wrong with which octet.
func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("empty address")
	}
	if strings.Contains(s, "%") {
		return netip.Addr{}, errors.New("IPv6 zones are not allowed")
	}
	if strings.Contains(s, ":") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, errors.New("invalid IPv6 address")
		}
		return a, nil
	}
	if strings.Trim(s, "0123456789.") != "" {
		return netip.Addr{}, errors.New("not an IP address, CIDR, range or glob")
	}
	fields := strings.Split(s, ".")
	if len(fields) != 4 {
		return netip.Addr{}, fmt.Errorf("IPv4 address needs 4 octets, got %d", len(fields))
	}
	var b [4]byte
	for i, f := range fields {
		v, err := parseOctet(f)
		if err != nil {
			return netip.Addr{}, err
		}
		b[i] = v
	}
	return netip.AddrFrom4(b), nil
}

// parseOctet parses one decimal IPv4 octet made only of digits.
func parseOctet(f string) (uint8, error) {
	switch {
	case f == "":
		return 0, errors.New("empty octet")
	case len(f) > 1 && f[0] == '0':
		return 0, errors.New("octet has a leading zero")
	case len(f) > 3:
		return 0, errors.New("octet out of range")
	}
	v, err := strconv.Atoi(f)
	if err != nil || v > 255 {
		return 0, errors.New("octet out of range")
	}
	return uint8(v), nil
}

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func v4Int(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func v6Int(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// lastAddr returns the highest address of a masked prefix. Go defines a
// shift by the full operand width to yield 0, so 1<<host-1 is all ones for
// host == 32 (or 64) too.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	host := a.BitLen() - p.Bits()
	if a.Is4() {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v4Int(a)|(uint32(1)<<host-1))
		return netip.AddrFrom4(b)
	}
	v := v6Int(a)
	if host >= 64 {
		v.lo = math.MaxUint64
		v.hi |= uint64(1)<<(host-64) - 1
	} else {
		v.lo |= uint64(1)<<host - 1
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// mergeV4 sorts ranges and coalesces overlapping or adjacent ones, so the
// binary search needs a single predecessor check.
func mergeV4(rs []v4Range) []v4Range {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b v4Range) int { return cmp.Compare(a.lo, b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.hi == math.MaxUint32 || r.lo <= last.hi+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// mergeV6 is mergeV4 for IPv6.
func mergeV6(rs []v6Range) []v6Range {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b v6Range) int { return a.lo.compare(b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		next, overflow := last.hi.next()
		if overflow || !next.less(r.lo) {
			if last.hi.less(r.hi) {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}
