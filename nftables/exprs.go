//go:build linux

package nftables

import (
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/gosmartproxy/smartproxy/iplist"
)

// Small expression builders; each comment gives the nft text it compiles.

// fib daddr type != local return
func fibNotLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeU32(unix.RTN_LOCAL)},
		ret(),
	}
}

// meta l4proto != @set return
func l4NotIn(set string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, notInSet(1, set), ret()}
}

// ct protocol @set
func ctL4In(set string) []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeyPROTOCOL, Register: 1}, inSet(1, set, false)}
}

// ct status dnat
func ctStatusDNAT() []expr.Any {
	const ipsDstNAT = 1 << 5 // IPS_DST_NAT
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: nativeU32(ipsDstNAT), Xor: nativeU32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeU32(0)},
	}
}

// ct original proto-dst into reg
func ctOrigDport(reg uint32) []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeyPROTODST, Register: reg, Direction: 0}}
}

// th dport into reg
func thDport(reg uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
}

// meta nfproto ipv4|ipv6
func nfproto(v6 bool) []expr.Any {
	f := byte(unix.NFPROTO_IPV4)
	if v6 {
		f = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f}},
	}
}

// meta nfproto ipvN, ip[6] saddr into register 1
func saddr(v6 bool) []expr.Any {
	if v6 {
		return append(nfproto(true), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16})
	}
	return append(nfproto(false), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4})
}

// reg in @set (or != @set with invert)
func inSet(reg uint32, set string, invert bool) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: set, Invert: invert}
}

func notInSet(reg uint32, set string) expr.Any { return inSet(reg, set, true) }

func counter() expr.Any { return &expr.Counter{} }
func ret() expr.Any     { return &expr.Verdict{Kind: expr.VerdictReturn} }
func drop() expr.Any    { return &expr.Verdict{Kind: expr.VerdictDrop} }

// nativeU32 is v as a register holds it for ct status and fib results.
func nativeU32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// portElems writes merged port ranges as interval set elements: each range
// is its start and, unless it ends at 65535, an interval end one past it.
func portElems(ps []PortRange) []nft.SetElement {
	var out []nft.SetElement
	for _, p := range ps {
		out = append(out, nft.SetElement{Key: be16(p.From)})
		if p.To < 65535 {
			out = append(out, nft.SetElement{Key: be16(p.To + 1), IntervalEnd: true})
		}
	}
	return out
}

// addrElems writes a list's intervals of one family as set elements.
func addrElems(rs []iplist.Range, v6 bool) []nft.SetElement {
	var out []nft.SetElement
	for _, r := range rs {
		if r.From.Is6() != v6 {
			continue
		}
		out = append(out, nft.SetElement{Key: r.From.AsSlice()})
		if next := r.To.Next(); next.IsValid() {
			out = append(out, nft.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// dedupElems drops repeated keys (ranges given twice).
func dedupElems(es []nft.SetElement) []nft.SetElement {
	slices.SortFunc(es, func(a, b nft.SetElement) int { return slices.Compare(a.Key, b.Key) })
	return slices.CompactFunc(es, func(a, b nft.SetElement) bool { return slices.Equal(a.Key, b.Key) })
}
