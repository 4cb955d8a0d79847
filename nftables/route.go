package nftables

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gosmartproxy/smartproxy/iplist"
)

// Protocol is the transport protocol a route forwards.
type Protocol string

// The protocols.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
	// All forwards TCP and UDP.
	All Protocol = "all"
)

// Balance chooses among a route's hosts, per new connection (or UDP flow).
type Balance string

// The balancing methods, each an nft numgen.
const (
	// RoundRobin takes the hosts in turn (numgen inc).
	RoundRobin Balance = "round-robin"
	// Random takes a random host (numgen random).
	Random Balance = "random"
)

// PortRange is an inclusive range of ports; a single port has From == To.
type PortRange struct {
	From, To uint16
}

// Route describes one kernel-forwarded route: packets for Ports (on an
// address of this host) are DNATed to Hosts. It is this package's own
// description; smartproxy converts its routes into it.
type Route struct {
	// Name identifies the route in rules, status and errors. Required and
	// unique within a Manager.
	Name string
	// Ports are the ports the route takes. Required.
	Ports []PortRange
	// Protocol is TCP (""), UDP or All.
	Protocol Protocol
	// Hosts are the targets, IPv4 and/or IPv6 literals (the kernel does not
	// resolve names). IPv4 clients go to the IPv4 hosts and IPv6 clients to
	// the IPv6 hosts; a family without hosts is not forwarded.
	Hosts []netip.Addr
	// Balance chooses among several hosts of a family; "" is RoundRobin.
	Balance Balance
	// Port is the target port; 0 keeps the port the client connected to.
	Port uint16
	// PortMap maps a client port to a target port, for every port of
	// Ports; it overrides Port.
	PortMap map[uint16]uint16
	// PreserveSourceIP leaves the client's address on forwarded packets
	// (no masquerade). The backend's replies must then be routed back
	// through this host (it is the backend's default gateway, or a route
	// for the clients' networks points here), or the connection fails.
	PreserveSourceIP bool
	// Allow, when it has patterns, admits only matching clients; Block
	// drops matching clients (block wins). A nil or empty list restricts
	// nothing, as in user-space routes. Both become nft interval sets, so
	// every pattern must be expressible as address intervals (see
	// iplist.List.Ranges).
	Allow, Block *iplist.List
	// MaxRate limits the route (see ParseRate); the zero Rate is none.
	MaxRate Rate
}

// RateKind says what a Rate limits.
type RateKind int

// The kinds of rate.
const (
	// NoRate: unlimited.
	NoRate RateKind = iota
	// ConnRate limits new connections (and new UDP flows) per route.
	ConnRate
	// ByteRate limits the route's forwarded bytes, both directions together.
	ByteRate
)

// Rate is a parsed maxRate: Count connections or bytes per Per seconds.
type Rate struct {
	Kind  RateKind
	Count uint64
	// Per is the unit in seconds: 1, 60, 3600 or 86400.
	Per uint64
	// Text is the value as written, for status and errors.
	Text string
}

var (
	connRateRE = regexp.MustCompile(`^([0-9]{1,10})/(second|minute|hour|day)$`)
	byteRateRE = regexp.MustCompile(`^([0-9]{1,10}) ?(bytes|kbytes|mbytes)/(second|minute)$`)
	bitRateRE  = regexp.MustCompile(`^([0-9]{1,10}) ?(kbps|mbps|gbps)$`)
	perUnit    = map[string]uint64{"second": 1, "minute": 60, "hour": 3600, "day": 86400}
	byteUnit   = map[string]uint64{"bytes": 1, "kbytes": 1 << 10, "mbytes": 1 << 20}
	bitUnit    = map[string]uint64{"kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8}
)

// ParseRate reads a maxRate: "N/second" (or /minute, /hour, /day) limits
// new connections; "N bytes/second", "N kbytes/second" or "N
// mbytes/second" (or /minute; k and m are 1024 and 1024², as in nft) and
// the TS style "10mbps" (kbps, mbps, gbps: bits per second) limit bandwidth.
// "" is no limit; anything else is an error naming the value.
func ParseRate(s string) (Rate, error) {
	if s == "" {
		return Rate{}, nil
	}
	r := Rate{Text: s}
	var n uint64
	if m := connRateRE.FindStringSubmatch(s); m != nil {
		n, _ = strconv.ParseUint(m[1], 10, 64)
		r.Kind, r.Count, r.Per = ConnRate, n, perUnit[m[2]]
	} else if m := byteRateRE.FindStringSubmatch(s); m != nil {
		n, _ = strconv.ParseUint(m[1], 10, 64)
		r.Kind, r.Count, r.Per = ByteRate, n*byteUnit[m[2]], perUnit[m[3]]
	} else if m := bitRateRE.FindStringSubmatch(s); m != nil {
		n, _ = strconv.ParseUint(m[1], 10, 64)
		r.Kind, r.Count, r.Per = ByteRate, n*bitUnit[m[2]], 1
	} else {
		return Rate{}, fmt.Errorf("maxRate %q: want \"N/second\" or \"N/minute\" (new connections), \"N mbytes/second\" or \"Nmbps\" (bandwidth)", s)
	}
	if n == 0 {
		return Rate{}, fmt.Errorf("maxRate %q: the rate must be at least 1", s)
	}
	return r, nil
}

// protocols returns the IP protocol numbers the route forwards.
func (r *Route) protocols() []byte {
	switch r.Protocol {
	case UDP:
		return []byte{17}
	case All:
		return []byte{6, 17}
	}
	return []byte{6}
}

// hosts returns the route's hosts of one family.
func (r *Route) hosts(v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, h := range r.Hosts {
		if h.Unmap().Is6() == v6 {
			out = append(out, h.Unmap())
		}
	}
	return out
}

// validate checks what the kernel rules need, naming the field.
func (r *Route) validate() error {
	var errs []error
	fail := func(field string, err error) { errs = append(errs, fmt.Errorf("route %q: %s: %w", r.Name, field, err)) }
	if r.Name == "" {
		fail("name", errors.New("is required"))
	}
	if len(r.Ports) == 0 {
		fail("ports", errors.New("at least one port is required"))
	}
	for i, p := range r.Ports {
		if p.From == 0 || p.From > p.To {
			fail(fmt.Sprintf("ports[%d]", i), fmt.Errorf("invalid range %d-%d", p.From, p.To))
		}
	}
	switch r.Protocol {
	case "", TCP, UDP, All:
	default:
		fail("protocol", fmt.Errorf("unknown protocol %q (want tcp, udp or all)", r.Protocol))
	}
	switch r.Balance {
	case "", RoundRobin, Random:
	default:
		fail("balance", fmt.Errorf("unknown method %q (want round-robin or random)", r.Balance))
	}
	if len(r.Hosts) == 0 {
		fail("hosts", errors.New("at least one host is required"))
	}
	for i, h := range r.Hosts {
		if !h.IsValid() || h.Zone() != "" {
			fail(fmt.Sprintf("hosts[%d]", i), fmt.Errorf("invalid address %v", h))
		}
	}
	if r.PortMap != nil {
		for _, p := range r.Ports {
			for port := int(p.From); port <= int(p.To); port++ {
				if r.PortMap[uint16(port)] == 0 {
					fail("portMap", fmt.Errorf("port %d has no target port", port))
					break
				}
			}
		}
	}
	for _, l := range []struct {
		field string
		list  *iplist.List
	}{{"allow", r.Allow}, {"block", r.Block}} {
		if _, err := l.list.Ranges(); err != nil {
			fail(l.field, err)
		}
	}
	return errors.Join(errs...)
}

// mergedPorts returns the ports sorted and merged.
func (r *Route) mergedPorts() []PortRange {
	ps := slices.Clone(r.Ports)
	slices.SortFunc(ps, func(a, b PortRange) int { return int(a.From) - int(b.From) })
	var out []PortRange
	for _, p := range ps {
		if n := len(out); n > 0 && uint32(p.From) <= uint32(out[n-1].To)+1 {
			out[n-1].To = max(out[n-1].To, p.To)
			continue
		}
		out = append(out, p)
	}
	return out
}

// fingerprint identifies the route's rules: equal fingerprints mean
// UpdateRoutes leaves the route's chains alone.
func (r *Route) fingerprint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q|%v|%s|%v|%s|%d|%v|%t|", r.Name, r.mergedPorts(), r.Protocol, r.Hosts, r.Balance, r.Port, r.PreserveSourceIP, r.MaxRate.Kind != NoRate)
	keys := make([]int, 0, len(r.PortMap))
	for k := range r.PortMap {
		keys = append(keys, int(k))
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%d:%d,", k, r.PortMap[uint16(k)])
	}
	fmt.Fprintf(&b, "|%d/%d/%d|", r.MaxRate.Kind, r.MaxRate.Count, r.MaxRate.Per)
	for _, l := range []*iplist.List{r.Allow, r.Block} {
		rs, _ := l.Ranges()
		fmt.Fprintf(&b, "%t%v|", l.Len() > 0, rs)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

// chainBase is the route's name made safe for nft object names, with a
// hash of the whole name so that distinct names never collide.
func chainBase(name string) string {
	var b strings.Builder
	for _, c := range name {
		if b.Len() >= 32 {
			break
		}
		if c < 128 && (c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(name))
	return "r-" + b.String() + "-" + hex.EncodeToString(sum[:4])
}

// checkRoutes validates routes and refuses two routes that would take the
// same packets.
func checkRoutes(routes []Route) error {
	var errs []error
	seen := map[string]bool{}
	type key struct {
		proto byte
		port  uint16
	}
	owner := map[key]string{}
	for i := range routes {
		r := &routes[i]
		if err := r.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("route %q: duplicate name", r.Name))
		}
		seen[r.Name] = true
	overlap:
		for _, p := range r.Ports {
			for port := int(p.From); port <= int(p.To); port++ {
				for _, proto := range r.protocols() {
					k := key{proto, uint16(port)}
					if o, ok := owner[k]; ok && o != r.Name {
						errs = append(errs, fmt.Errorf("route %q: port %d is also taken by route %q", r.Name, port, o))
						break overlap
					}
					owner[k] = r.Name
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("nftables: invalid routes: %w", errors.Join(errs...))
	}
	return nil
}
