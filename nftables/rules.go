//go:build linux

package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/gosmartproxy/smartproxy/iplist"
)

// The table's base chains; every route has a regular chain jumped to from
// each (its "nat", "snat" and "fwd" chains), so that a route's rules can be
// replaced without touching another route's.
const (
	chainPre  = "prerouting"  // nat, DNAT of packets arriving for this host
	chainOut  = "output"      // nat, DNAT of connections made on this host
	chainPost = "postrouting" // nat, masquerade of forwarded routes
	chainFwd  = "forward"     // filter, counters and bandwidth limits
	chainMark = "owner"       // holds the owner marker rule, never hooked
)

// The constant sets of IP protocols a route chain checks first.
var protoSets = map[Protocol][]byte{TCP: {unix.IPPROTO_TCP}, UDP: {unix.IPPROTO_UDP}, All: {unix.IPPROTO_TCP, unix.IPPROTO_UDP}}

func protoSetName(p Protocol) string { return "proto-" + string(p) }

// baseChains adds the table's base chains and constant sets to the batch.
func baseChains(c *nft.Conn, t *nft.Table) error {
	pol := nft.ChainPolicyAccept
	for _, ch := range []*nft.Chain{
		{Name: chainPre, Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityNATDest, Policy: &pol},
		{Name: chainOut, Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookOutput, Priority: nft.ChainPriorityNATDest, Policy: &pol},
		{Name: chainPost, Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPostrouting, Priority: nft.ChainPriorityNATSource, Policy: &pol},
		{Name: chainFwd, Table: t, Type: nft.ChainTypeFilter, Hooknum: nft.ChainHookForward, Priority: nft.ChainPriorityFilter, Policy: &pol},
		{Name: chainMark, Table: t},
	} {
		c.AddChain(ch)
	}
	for _, p := range []Protocol{TCP, UDP, All} {
		var elems []nft.SetElement
		for _, b := range protoSets[p] {
			elems = append(elems, nft.SetElement{Key: []byte{b}})
		}
		s := &nft.Set{Table: t, Name: protoSetName(p), KeyType: nft.TypeInetProto, Constant: true}
		if err := addSet(c, s, elems); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	return nil
}

// routeNames are the nft objects of one generation of one route.
type routeNames struct{ prefix string }

func (n routeNames) nat() string            { return n.prefix + "-nat" }
func (n routeNames) snat() string           { return n.prefix + "-snat" }
func (n routeNames) fwd() string            { return n.prefix + "-fwd" }
func (n routeNames) count() string          { return n.prefix + "-count" }
func (n routeNames) set(kind string) string { return n.prefix + "-" + kind }

// ruleTag is the UserData of the rules that belong to a route generation:
// jump rules are found by it for deletion, and counters for status.
func ruleTag(prefix, role string) []byte { return []byte("smartproxy:" + prefix + ":" + role) }

// addRoute adds a route's sets, chains, rules and jump rules to the batch.
func addRoute(c *nft.Conn, t *nft.Table, r *Route, n routeNames) error {
	protos := r.Protocol
	if protos == "" {
		protos = TCP
	}
	ports := &nft.Set{Table: t, Name: n.set("ports"), KeyType: nft.TypeInetService, Interval: true}
	if err := addSet(c, ports, portElems(r.mergedPorts())); err != nil {
		return err
	}
	for _, l := range []struct {
		kind string
		list *iplist.List
	}{{"block", r.Block}, {"allow", r.Allow}} {
		if l.list.Len() == 0 {
			continue
		}
		rs, err := l.list.Ranges()
		if err != nil {
			return err
		}
		for _, v6 := range []bool{false, true} {
			key, suffix := nft.TypeIPAddr, "4"
			if v6 {
				key, suffix = nft.TypeIP6Addr, "6"
			}
			s := &nft.Set{Table: t, Name: n.set(l.kind + suffix), KeyType: key, Interval: true}
			if err := addSet(c, s, addrElems(rs, v6)); err != nil {
				return err
			}
		}
	}

	natC := c.AddChain(&nft.Chain{Name: n.nat(), Table: t})
	snatC := c.AddChain(&nft.Chain{Name: n.snat(), Table: t})
	fwdC := c.AddChain(&nft.Chain{Name: n.fwd(), Table: t})

	// nat: only packets for this host's addresses, of the route's
	// protocols and ports, go on.
	add := func(ch *nft.Chain, role string, ex ...expr.Any) {
		c.AddRule(&nft.Rule{Table: t, Chain: ch, Exprs: ex, UserData: ruleTag(n.prefix, role)})
	}
	add(natC, "guard", fibNotLocal()...)
	add(natC, "guard", l4NotIn(protoSetName(protos))...)
	add(natC, "guard", cat(thDport(2), notInSet(2, ports.Name), ret())...)
	if r.Block.Len() > 0 {
		add(natC, "block", cat(saddr(false), inSet(1, n.set("block4"), false), counter(), drop())...)
		add(natC, "block", cat(saddr(true), inSet(1, n.set("block6"), false), counter(), drop())...)
	}
	if r.Allow.Len() > 0 {
		add(natC, "allow", cat(saddr(false), inSet(1, n.set("allow4"), true), counter(), drop())...)
		add(natC, "allow", cat(saddr(true), inSet(1, n.set("allow6"), true), counter(), drop())...)
	}
	if r.MaxRate.Kind == ConnRate {
		add(natC, "rate", &expr.Limit{Type: expr.LimitTypePkts, Rate: r.MaxRate.Count, Unit: expr.LimitTime(r.MaxRate.Per), Over: true, Burst: 0}, counter(), drop())
	}
	for _, v6 := range []bool{false, true} {
		hosts := r.hosts(v6)
		if len(hosts) == 0 {
			continue
		}
		dnat, err := dnatExprs(c, t, r, n, v6, hosts)
		if err != nil {
			return err
		}
		add(natC, "dnat", cat(nfproto(v6), counter(), dnat)...)
	}

	// snat and fwd see the connection by its original tuple, each in one
	// rule: this library version cannot read back rules with a ct
	// direction, so the counters live in the count chain, which has none.
	ctMatch := cat(ctStatusDNAT(), ctL4In(protoSetName(protos)), ctOrigDport(2), inSet(2, ports.Name, false))
	if !r.PreserveSourceIP {
		add(snatC, "masq", cat(ctMatch, &expr.Masq{})...)
	}
	cntC := c.AddChain(&nft.Chain{Name: n.count(), Table: t})
	add(fwdC, "guard", cat(ctMatch, &expr.Verdict{Kind: expr.VerdictJump, Chain: n.count()})...)
	add(cntC, "traffic", counter())
	if r.MaxRate.Kind == ByteRate {
		add(cntC, "rate", &expr.Limit{Type: expr.LimitTypePktBytes, Rate: r.MaxRate.Count, Unit: expr.LimitTime(r.MaxRate.Per), Over: true, Burst: uint32(min(r.MaxRate.Count, 1<<30))}, counter(), drop())
	}

	for base, target := range map[string]string{chainPre: n.nat(), chainOut: n.nat(), chainPost: n.snat(), chainFwd: n.fwd()} {
		c.AddRule(&nft.Rule{Table: t, Chain: &nft.Chain{Name: base, Table: t}, UserData: ruleTag(n.prefix, "jump"),
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: target}}})
	}
	return nil
}

// dnatExprs loads the target address (register 1) and port (register 2)
// and DNATs to them.
func dnatExprs(c *nft.Conn, t *nft.Table, r *Route, n routeNames, v6 bool, hosts []netip.Addr) ([]expr.Any, error) {
	fam := uint32(unix.NFPROTO_IPV4)
	keyType := nft.TypeIPAddr
	if v6 {
		fam, keyType = unix.NFPROTO_IPV6, nft.TypeIP6Addr
	}
	var ex []expr.Any
	if len(hosts) == 1 {
		ex = append(ex, &expr.Immediate{Register: 1, Data: hosts[0].AsSlice()})
	} else {
		name := n.set(fmt.Sprintf("hosts%d", map[bool]int{false: 4, true: 6}[v6]))
		s := &nft.Set{Table: t, Name: name, IsMap: true, KeyType: nft.TypeInteger, DataType: keyType, KeyByteOrder: binaryutil.NativeEndian}
		elems := make([]nft.SetElement, len(hosts))
		for i, h := range hosts {
			elems[i] = nft.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: h.AsSlice()}
		}
		if err := addSet(c, s, elems); err != nil {
			return nil, err
		}
		ng := uint32(unix.NFT_NG_INCREMENTAL)
		if r.Balance == Random {
			ng = unix.NFT_NG_RANDOM
		}
		ex = append(ex, &expr.Numgen{Register: 1, Modulus: uint32(len(hosts)), Type: ng},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: name})
	}
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1}
	switch {
	case r.PortMap != nil:
		name := n.set(fmt.Sprintf("portmap%d", map[bool]int{false: 4, true: 6}[v6]))
		s := &nft.Set{Table: t, Name: name, IsMap: true, KeyType: nft.TypeInetService, DataType: nft.TypeInetService}
		var elems []nft.SetElement
		for _, p := range r.Ports {
			for port := int(p.From); port <= int(p.To); port++ {
				elems = append(elems, nft.SetElement{Key: be16(uint16(port)), Val: be16(r.PortMap[uint16(port)])})
			}
		}
		if err := addSet(c, s, dedupElems(elems)); err != nil {
			return nil, err
		}
		ex = append(ex, thDport(2)...)
		ex = append(ex, &expr.Lookup{SourceRegister: 2, DestRegister: 2, IsDestRegSet: true, SetName: name})
		nat.RegProtoMin, nat.Specified = 2, true
	case r.Port != 0:
		ex = append(ex, &expr.Immediate{Register: 2, Data: be16(r.Port)})
		nat.RegProtoMin, nat.Specified = 2, true
	}
	return append(ex, nat), nil
}

func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
