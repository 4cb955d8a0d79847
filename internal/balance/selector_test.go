package balance

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// One test per selector, over pools like the proxy builds: three hosts on
// one port, with a registry where a test takes hosts out or loads them.

func testHealth() *Health {
	return NewHealth(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

var testHosts = []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}

// testPool is a pool of testHosts on port 80 with precomputed addresses.
func testPool(tried ...string) *Pool {
	return &Pool{Hosts: testHosts, Addrs: JoinAll(testHosts, "80"), Tried: tried}
}

// picks runs sel n times over fresh copies of pool, through the
// interface, and counts the choices.
func picks(t *testing.T, sel Selector, pool *Pool, reg *Health, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		p := *pool
		a, ok := sel.Select(&p, reg)
		require.True(t, ok)
		got[a]++
	}
	return got
}

func TestNewSelectorNames(t *testing.T) {
	for name, want := range map[string]Selector{
		"": new(RoundRobin), "round-robin": new(RoundRobin), "least-connections": new(LeastConnections),
		"ip-hash": IPHash{}, "random": PowerOfTwoChoices{},
	} {
		got, ok := NewSelector(name)
		require.True(t, ok, name)
		require.IsType(t, want, got, name)
	}
	_, ok := NewSelector("fastest")
	require.False(t, ok)
	a, _ := NewSelector("round-robin")
	b, _ := NewSelector("round-robin")
	require.NotSame(t, a, b, "each route gets its own position")
}

func TestRoundRobinTakesHostsInTurn(t *testing.T) {
	reg := testHealth()
	sel := new(RoundRobin)
	var got []string
	for range 4 {
		a, ok := Pick(sel, testPool(), reg)
		require.True(t, ok)
		got = append(got, a)
	}
	require.Equal(t, []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80"}, got)

	// Failing and tried hosts are skipped: a skipped host's turn goes to
	// the next usable one.
	reg.Failed("10.0.0.3:80", io.EOF)
	got = got[:0]
	for range 6 {
		a, _ := Pick(sel, testPool(), reg)
		got = append(got, a)
	}
	require.Equal(t, []string{"10.0.0.2:80", "10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.1:80"}, got)
	a, ok := Pick(sel, testPool("10.0.0.1:80"), reg)
	require.True(t, ok)
	require.Equal(t, "10.0.0.2:80", a)
	_, ok = Pick(sel, testPool("10.0.0.1:80", "10.0.0.2:80"), reg)
	require.False(t, ok)
}

func TestLeastConnectionsPrefersIdleHosts(t *testing.T) {
	reg := testHealth()
	sel := new(LeastConnections)
	var l1, l2 Lease
	reg.Acquire(&l1, "10.0.0.1:80")
	reg.Acquire(&l2, "10.0.0.1:80")
	var l3 Lease
	reg.Acquire(&l3, "10.0.0.2:80")
	for range 3 {
		a, ok := Pick(sel, testPool(), reg)
		require.True(t, ok)
		require.Equal(t, "10.0.0.3:80", a)
	}
	// Ties rotate instead of all going to the first host.
	l1.Release()
	l2.Release()
	l3.Release()
	require.Equal(t, map[string]int{"10.0.0.1:80": 2, "10.0.0.2:80": 2, "10.0.0.3:80": 2}, picks(t, sel, testPool(), reg, 6))
	// A tried host is skipped however idle.
	reg.Acquire(&l1, "10.0.0.1:80")
	a, ok := Pick(sel, testPool("10.0.0.3:80", "10.0.0.2:80"), reg)
	require.True(t, ok)
	require.Equal(t, "10.0.0.1:80", a)
	l1.Release()
}

func TestIPHashIsStableAndMovesOnlyTheLostClients(t *testing.T) {
	reg := testHealth()
	sel := IPHash{}
	owner := map[netip.Addr]string{}
	spread := map[string]int{}
	for i := range 60 {
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		p := testPool()
		p.Client = ip
		a, ok := Pick(sel, p, reg)
		require.True(t, ok)
		for range 3 {
			p := testPool()
			p.Client = ip
			again, _ := Pick(sel, p, reg)
			require.Equal(t, a, again, "client %s moved", ip)
		}
		// The same address as IPv4-mapped IPv6 hashes alike.
		p = testPool()
		p.Client = netip.AddrFrom16(ip.As16())
		mapped, _ := Pick(sel, p, reg)
		require.Equal(t, a, mapped)
		owner[ip] = a
		spread[a]++
	}
	require.Len(t, spread, 3, "%v", spread)

	// Reordered hosts keep every choice: scores hash names, not positions.
	reversed := []string{"10.0.0.3", "10.0.0.2", "10.0.0.1"}
	for ip, was := range owner {
		a, _ := Pick(sel, &Pool{Hosts: reversed, Port: "80", Client: ip}, nil)
		require.Equal(t, was, a)
	}

	reg.Failed("10.0.0.1:80", io.EOF)
	for ip, was := range owner {
		p := testPool()
		p.Client = ip
		now, ok := Pick(sel, p, reg)
		require.True(t, ok)
		if was != "10.0.0.1:80" {
			require.Equal(t, was, now, "client %s of a live host moved", ip)
		}
		require.NotEqual(t, "10.0.0.1:80", now)
	}
}

func TestPowerOfTwoChoicesTakesTheLessLoadedSample(t *testing.T) {
	reg := testHealth()
	sel := PowerOfTwoChoices{}
	// Two hosts: both are always sampled, so the idle one always wins.
	two := &Pool{Hosts: testHosts[:2], Addrs: JoinAll(testHosts[:2], "80")}
	var l Lease
	reg.Acquire(&l, "10.0.0.1:80")
	require.Equal(t, map[string]int{"10.0.0.2:80": 20}, picks(t, sel, two, reg, 20))
	l.Release()

	// Every host gets a share; a failing one none.
	got := picks(t, sel, testPool(), reg, 300)
	require.Len(t, got, 3, "%v", got)
	reg.Failed("10.0.0.2:80", io.EOF)
	got = picks(t, sel, testPool(), reg, 300)
	require.Len(t, got, 2, "%v", got)
	require.Zero(t, got["10.0.0.2:80"])

	// Both samples out: the next usable host is taken, else none.
	for range 20 {
		a, ok := Pick(sel, testPool("10.0.0.1:80"), reg)
		require.True(t, ok)
		require.Equal(t, "10.0.0.3:80", a)
	}
	_, ok := Pick(sel, testPool("10.0.0.1:80", "10.0.0.3:80"), reg)
	require.False(t, ok)
}

func TestFirstTakesTheFirstUsableHost(t *testing.T) {
	reg := testHealth()
	require.Equal(t, map[string]int{"10.0.0.1:80": 3}, picks(t, First{}, testPool(), reg, 3))
	reg.Failed("10.0.0.1:80", io.EOF)
	a, ok := Pick(First{}, testPool(), reg)
	require.True(t, ok)
	require.Equal(t, "10.0.0.2:80", a)
	// Without precomputed addresses, hosts are joined with the port.
	a, ok = Pick(First{}, &Pool{Hosts: []string{"2001:db8::1"}, Port: "443"}, reg)
	require.True(t, ok)
	require.Equal(t, "[2001:db8::1]:443", a)
	_, ok = Pick(First{}, &Pool{Hosts: []string{"h"}, Port: "1", Tried: []string{"h:1"}}, nil)
	require.False(t, ok)
}

// Pick over precomputed addresses allocates nothing, even with the
// caller's tried buffer on its stack and a registry with state: the reason
// Pick calls the selectors directly.
func TestPickAllocatesNothing(t *testing.T) {
	reg := testHealth()
	var l Lease
	reg.Acquire(&l, "10.0.0.1:80")
	defer l.Release()
	reg.Failed("10.0.0.2:80", io.EOF)
	addrs := JoinAll(testHosts, "80")
	for _, name := range []string{"round-robin", "least-connections", "ip-hash", "random"} {
		sel, _ := NewSelector(name)
		allocs := testing.AllocsPerRun(100, func() {
			var triedBuf [4]string
			tried := append(triedBuf[:0], "10.0.0.3:80")
			pool := Pool{Hosts: testHosts, Addrs: addrs, Tried: tried, Client: netip.MustParseAddr("192.0.2.1")}
			if _, ok := Pick(sel, &pool, reg); !ok {
				panic("no host")
			}
		})
		require.Zero(t, allocs, name)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, name := range []string{"round-robin", "least-connections", "ip-hash", "random"} {
		b.Run(name, func(b *testing.B) {
			reg := testHealth()
			var l Lease
			reg.Acquire(&l, "10.0.0.1:80")
			defer l.Release()
			sel, _ := NewSelector(name)
			hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
			addrs := JoinAll(hosts, "80")
			client := netip.MustParseAddr("192.0.2.55")
			b.ReportAllocs()
			for b.Loop() {
				pool := Pool{Hosts: hosts, Addrs: addrs, Client: client}
				if _, ok := Pick(sel, &pool, reg); !ok {
					b.Fatal("no host")
				}
			}
		})
	}
}

func ExamplePick() {
	sel, _ := NewSelector("round-robin")
	hosts := []string{"10.0.0.1", "10.0.0.2"}
	addrs := JoinAll(hosts, "8080") // once, when the routes are compiled
	for range 3 {
		pool := Pool{Hosts: hosts, Addrs: addrs} // per connection
		addr, _ := Pick(sel, &pool, nil)         // nil: no health registry
		fmt.Println(addr)
	}
	// Output:
	// 10.0.0.1:8080
	// 10.0.0.2:8080
	// 10.0.0.1:8080
}
