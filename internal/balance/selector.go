package balance

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
)

// Selector is one load-balancing policy: it chooses one usable host of a
// pool and returns its address, or reports false when none is usable. A
// host is usable when the pool has not tried it yet and health does not
// have it down; health also counts each host's active connections. A nil
// health has every host up and idle. Each policy is its own small type,
// as in caddy-l4; [NewSelector] makes one from its configuration name.
//
// The interface is closed (its unexported method keeps other types out)
// because [Pick] calls each policy directly instead of through the
// interface: a call through an interface makes the compiler move the pool,
// and the caller's buffer of tried addresses, to the heap, and selection
// runs once per connection and per request.
type Selector interface {
	// Select chooses among pool's usable hosts. It must be safe for
	// concurrent use: one selector serves every connection of a route.
	Select(pool *Pool, health *Health) (addr string, ok bool)
	selector()
}

// NewSelector returns a new selector for a configured algorithm name:
// "round-robin" (also the empty name), "least-connections", "ip-hash" or
// "random". It reports false for any other name. Each call returns a
// selector of its own, whose state (the round-robin position) only the
// pools it is given share.
func NewSelector(algorithm string) (Selector, bool) {
	switch algorithm {
	case "", "round-robin":
		return new(RoundRobin), true
	case "least-connections":
		return new(LeastConnections), true
	case "ip-hash":
		return IPHash{}, true
	case "random":
		return PowerOfTwoChoices{}, true
	}
	return nil, false
}

// Pick runs sel over pool with health: the one entry point of selection.
// It allocates nothing for a pool with precomputed addresses, and leaves
// the caller's buffer of tried addresses on its stack.
func Pick(sel Selector, pool *Pool, health *Health) (string, bool) {
	// A type switch rather than sel.Select: see Selector.
	switch s := sel.(type) {
	case *RoundRobin:
		return s.Select(pool, health)
	case *LeastConnections:
		return s.Select(pool, health)
	case IPHash:
		return s.Select(pool, health)
	case PowerOfTwoChoices:
		return s.Select(pool, health)
	case First:
		return s.Select(pool, health)
	}
	panic("balance: unknown selector") // unreachable: Selector is closed
}

// Pool is the hosts one selection chooses among. Callers build it per
// connection or request, on their stack, and hand it to [Pick].
type Pool struct {
	// Hosts are the host names or IPs, in configuration order.
	Hosts []string
	// Addrs are the precomputed "host:port" of Hosts (see [JoinAll]); when
	// nil, each address is joined from its host and Port as needed.
	Addrs []string
	// Port is the port of every host, used when Addrs is nil.
	Port string
	// Tried are addresses earlier attempts of the same connection or
	// request used: they are skipped.
	Tried []string
	// Client is the client's IP, which IPHash keys on.
	Client netip.Addr

	// The registry is not a field: whatever a Pool points to is treated by
	// the compiler as one, and the registry's lock makes it escape, which
	// would take Tried's buffer along to the heap.
	now int64 // unix nanoseconds, read once per selection when needed
}

// JoinAll returns "host:port" for each of hosts: the Addrs of a pool
// whose port is fixed, computed once when the routes are compiled so that
// selection joins no strings per connection.
func JoinAll(hosts []string, port string) []string {
	addrs := make([]string, len(hosts))
	for i, h := range hosts {
		addrs[i] = net.JoinHostPort(h, port)
	}
	return addrs
}

func (p *Pool) addr(i int) string {
	if p.Addrs != nil {
		return p.Addrs[i]
	}
	return net.JoinHostPort(p.Hosts[i], p.Port)
}

// usable reports whether host i may be chosen, with its address and its
// health entry (nil when health knows nothing of it: up and idle).
func (p *Pool) usable(i int, health *Health) (string, *addrHealth, bool) {
	a := p.addr(i)
	for _, t := range p.Tried {
		if t == a {
			return a, nil, false
		}
	}
	if health == nil {
		return a, nil, true
	}
	h := health.lookup(a)
	if h == nil {
		return a, nil, true
	}
	return a, h, h.up(&p.now)
}

// RoundRobin takes the hosts in turn, skipping those that are not usable.
// Its position is shared by every pool it is given: one per route.
type RoundRobin struct{ next atomic.Uint64 }

// Select returns the first usable host from the next position on.
func (s *RoundRobin) Select(pool *Pool, health *Health) (string, bool) {
	n := uint64(len(pool.Hosts))
	start := s.next.Add(1) - 1
	for k := range n {
		if a, _, ok := pool.usable(int((start+k)%n), health); ok {
			return a, true
		}
	}
	return "", false
}

// LeastConnections takes the usable host with the fewest active
// connections and requests ([Health.Acquire]).
type LeastConnections struct{ next atomic.Uint64 }

// Select scans every host from a rotating start, which makes ties (idle
// hosts above all) go round-robin instead of all to the first host.
func (s *LeastConnections) Select(pool *Pool, health *Health) (string, bool) {
	n := uint64(len(pool.Hosts))
	start := s.next.Add(1) - 1
	best, bestAddr, least := -1, "", int64(0)
	for k := range n {
		i := int((start + k) % n)
		a, h, ok := pool.usable(i, health)
		if !ok {
			continue
		}
		if act := h.activeConns(); best < 0 || act < least {
			best, bestAddr, least = i, a, act
		}
	}
	return bestAddr, best >= 0
}

// IPHash sends each client IP to the same host while that host is usable,
// by rendezvous hashing: each host scores hash(client IP, host name) and
// the highest usable score wins. A client falls to its next-highest
// (deterministic) host when its own is down, and adding or removing a host
// moves only the clients it wins or loses. Hashing the host name, not its
// position, keeps choices stable when the list is reordered, and the hash
// is the same in every process, so proxies behind one DNS name agree.
type IPHash struct{}

// Select returns the usable host with the highest score for pool.Client.
func (IPHash) Select(pool *Pool, health *Health) (string, bool) {
	seed := hashIP(pool.Client)
	best, bestAddr, bestScore := -1, "", uint64(0)
	for i := range pool.Hosts {
		a, _, ok := pool.usable(i, health)
		if !ok {
			continue
		}
		if s := hashString(seed, pool.Hosts[i]); best < 0 || s > bestScore {
			best, bestAddr, bestScore = i, a, s
		}
	}
	return bestAddr, best >= 0
}

// PowerOfTwoChoices (the "random" algorithm) samples two distinct hosts
// at random and takes the one with fewer active connections: nearly
// least-connections' balance without scanning every host, and no herd on
// the single least-loaded host.
type PowerOfTwoChoices struct{}

// Select samples two hosts; when both are out it takes the first usable
// host after the first sample.
func (PowerOfTwoChoices) Select(pool *Pool, health *Health) (string, bool) {
	n := len(pool.Hosts)
	i := rand.IntN(n)
	ai, hi, oki := pool.usable(i, health)
	if n > 1 {
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		aj, hj, okj := pool.usable(j, health)
		switch {
		case oki && okj:
			if hj.activeConns() < hi.activeConns() {
				return aj, true
			}
			return ai, true
		case okj:
			return aj, true
		}
	}
	if oki {
		return ai, true
	}
	for k := 1; k < n; k++ {
		if a, _, ok := pool.usable((i+k)%n, health); ok {
			return a, true
		}
	}
	return "", false
}

// First takes the first usable host in order. The proxy uses it for a
// pool of one host (a target whose host a function chooses per
// connection), where the route's policy has nothing to choose and must not
// advance its round-robin position.
type First struct{}

// Select returns the first usable host.
func (First) Select(pool *Pool, health *Health) (string, bool) {
	for i := range pool.Hosts {
		if a, _, ok := pool.usable(i, health); ok {
			return a, true
		}
	}
	return "", false
}

func (*RoundRobin) selector()       {}
func (*LeastConnections) selector() {}
func (IPHash) selector()            {}
func (PowerOfTwoChoices) selector() {}
func (First) selector()             {}
