package smartproxy

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/stretchr/testify/require"
)

// Unit tests of pick (lb.go), the one entry point of target selection for
// TCP and HTTP, over compiled routes without listeners or backends.

func TestPickBackendSkipsTriedAndDown(t *testing.T) {
	p := newTestProxy(t, nil, Options{Routes: []Route{lbRoute("x", 80, "round-robin", "10.0.0.1:1", "10.0.0.2:1")}})
	r := p.set.Load().routes[0]
	rc := &RouteContext{Port: 80}
	a, err := pick(r, 0, rc, []string{"10.0.0.1:1"}, p.health)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.2:1", a)
	_, err = pick(r, 0, rc, []string{"10.0.0.1:1", "10.0.0.2:1"}, p.health)
	require.ErrorIs(t, err, ErrNoHealthyTarget)

	p.health.Failed("10.0.0.2:1", io.ErrUnexpectedEOF)
	for range 4 {
		a, err = pick(r, 0, rc, nil, p.health)
		require.NoError(t, err)
		require.Equal(t, "10.0.0.1:1", a)
	}
	p.health.Succeeded("10.0.0.2:1")
	seen := map[string]bool{}
	for range 4 {
		a, _ = pick(r, 0, rc, nil, p.health)
		seen[a] = true
	}
	require.Len(t, seen, 2)
	// A pristine dynamic entry leaves the registry once released.
	var l balance.Lease
	p.health.Acquire(&l, "10.9.9.9:9")
	require.Len(t, p.TargetHealth(), 1)
	l.Release()
	l.Release() // extra calls are ignored
	require.Empty(t, p.TargetHealth())
}

func TestIPHashHostFuncAndPreservePort(t *testing.T) {
	// ip-hash over PreservePort targets: the port is the client's.
	p := newTestProxy(t, nil, Options{Routes: []Route{
		lbRoute("pp", 8000, "ip-hash", "h1", "h2", "h3"),
		NewRoute("fn").Ports(81).Target(Target{HostFunc: func(*RouteContext) string { return "dyn" }, Port: 9}).Route(),
	}})
	set := p.set.Load()
	rc := &RouteContext{Port: 8000, ClientIP: netip.MustParseAddr("192.0.2.7")}
	a, err := pick(set.routes[0], 0, rc, nil, p.health)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(a, ":8000"), a)
	for range 5 {
		b, _ := pick(set.routes[0], 0, rc, nil, p.health)
		require.Equal(t, a, b)
	}
	a, err = pick(set.routes[1], 0, &RouteContext{Port: 81}, nil, p.health)
	require.NoError(t, err)
	require.Equal(t, "dyn:9", a)
	p.health.Failed("dyn:9", io.EOF)
	_, err = pick(set.routes[1], 0, &RouteContext{Port: 81}, nil, p.health)
	require.ErrorIs(t, err, ErrNoHealthyTarget)
}

// pick allocates nothing for targets whose addresses compileLB
// precomputed (a fixed port, or PreservePort on the route's first
// maxPreservedPorts ports), with the caller's tried buffer on its stack;
// ports past those still get their address, joined per connection.
func TestPickPrecomputedAddrsAllocateNothing(t *testing.T) {
	p := newTestProxy(t, nil, Options{Routes: []Route{
		lbRoute("fixed", 80, "ip-hash", "10.0.0.1:81", "10.0.0.2:81"),
		NewRoute("preserve").PortRange(3000, 3500).ForwardTo("10.0.0.3", "10.0.0.4").Route(),
	}})
	set := p.set.Load()
	var l balance.Lease
	p.health.Acquire(&l, "10.0.0.1:81") // some registry state
	defer l.Release()
	for _, c := range []struct {
		route *Route
		port  int
	}{{set.routes[0], 80}, {set.routes[1], 3000}, {set.routes[1], 3255}} {
		rc := &RouteContext{Port: c.port, ClientIP: netip.MustParseAddr("192.0.2.9")}
		allocs := testing.AllocsPerRun(100, func() {
			var triedBuf [4]string
			tried := append(triedBuf[:0], "10.0.0.9:1")
			if _, err := pick(c.route, 0, rc, tried, p.health); err != nil {
				panic(err)
			}
		})
		require.Zero(t, allocs, "%s port %d", c.route.Name, c.port)
	}
	a, err := pick(set.routes[1], 0, &RouteContext{Port: 3400}, []string{"10.0.0.3:3400"}, p.health)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.4:3400", a)
	require.Len(t, set.routes[1].state.lb.addrs[0].byPort, maxPreservedPorts)
}

func BenchmarkPickBackend(b *testing.B) {
	for _, algo := range []string{"round-robin", "least-connections", "ip-hash", "random"} {
		b.Run(algo, func(b *testing.B) {
			p := newTestProxy(b, nil, Options{Routes: []Route{lbRoute("x", 80, algo, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")}})
			r := p.set.Load().routes[0]
			// Some registry state, as on a busy proxy.
			var l1, l3 balance.Lease
			p.health.Acquire(&l1, "10.0.0.1:80")
			p.health.Acquire(&l3, "10.0.0.3:80")
			defer l1.Release()
			defer l3.Release()
			rc := &RouteContext{Port: 80, ClientIP: netip.MustParseAddr("192.0.2.55")}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := pick(r, 0, rc, nil, p.health); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
