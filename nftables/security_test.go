//go:build linux

package nftables

import (
	"context"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/netnstest"
	"github.com/gosmartproxy/smartproxy/iplist"
)

func mustList(t *testing.T, patterns ...string) *iplist.List {
	t.Helper()
	l, err := iplist.Parse(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// preserveSourceIP: the backend sees the client's own address (it routes
// its replies back through the proxy host, its default gateway).
func TestPreserveSourceIP(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	netnstest.ServeTCP(t, tp.Bkd, ":9000")
	startManager(t, tp, Route{Name: "keep", Ports: []PortRange{{8000, 8000}}, Hosts: addrs(netnstest.BkdAddr4, netnstest.BkdAddr6), Port: 9000, PreserveSourceIP: true})
	for _, tc := range []struct{ proxy, client string }{{netnstest.PrxAddr4, netnstest.CliAddr4}, {netnstest.PrxAddr6, netnstest.CliAddr6}} {
		got, err := netnstest.AskTCP(tp.Cli, hostPort(tc.proxy, 8000), 3*time.Second)
		if err != nil || got != "9000 "+tc.client {
			t.Errorf("via %s: got %q, %v; want the backend to see %s", tc.proxy, got, err, tc.client)
		}
	}
}

// Block and allow lists are enforced by the kernel: no packet of a refused
// client reaches the backend, and the drops are counted.
func TestBlockAndAllowLists(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	back := netnstest.ServeTCP(t, tp.Bkd, ":9000")
	udp := netnstest.ServeUDP(t, tp.Bkd, ":9000")
	hosts := addrs(netnstest.BkdAddr4, netnstest.BkdAddr6)
	m := startManager(t, tp,
		Route{Name: "blocked", Ports: []PortRange{{8001, 8001}}, Protocol: All, Hosts: hosts, Port: 9000, Block: mustList(t, "10.200.1.0/24", "fd00:1::/64")},
		Route{Name: "not-allowed", Ports: []PortRange{{8002, 8002}}, Protocol: All, Hosts: hosts, Port: 9000, Allow: mustList(t, "192.168.*", "10.9.0.1-10.9.0.9")},
		Route{Name: "allowed", Ports: []PortRange{{8003, 8003}}, Hosts: hosts, Port: 9000, Allow: mustList(t, "10.200.1.*"), Block: mustList(t, "10.200.1.99")},
	)
	for _, port := range []int{8001, 8002} {
		for _, proxy := range []string{netnstest.PrxAddr4, netnstest.PrxAddr6} {
			if got, err := netnstest.AskTCP(tp.Cli, hostPort(proxy, port), 500*time.Millisecond); !netnstest.IsTimeout(err) {
				t.Errorf("tcp %s:%d: got %q, %v; want the SYN dropped (a timeout)", proxy, port, got, err)
			}
			if got, err := netnstest.AskUDP(tp.Cli, hostPort(proxy, port), 300*time.Millisecond); !netnstest.IsTimeout(err) {
				t.Errorf("udp %s:%d: got %q, %v; want the datagram dropped", proxy, port, got, err)
			}
		}
	}
	if got := back.Clients(); len(got) != 0 || udp.Get() != 0 {
		t.Fatalf("the backend saw %v and %d UDP bytes from refused clients", got, udp.Get())
	}
	// The allow list admits IPv4 clients of 10.200.1.*; it has no IPv6
	// entry, so IPv6 clients are refused.
	if got, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, 8003), 3*time.Second); err != nil || got != "9000 10.200.2.1" {
		t.Errorf("allowed client: got %q, %v", got, err)
	}
	if _, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr6, 8003), 500*time.Millisecond); !netnstest.IsTimeout(err) {
		t.Errorf("IPv6 client of an IPv4-only allow list: err = %v, want dropped", err)
	}
	st, err := m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range st.Routes {
		if rs.Dropped == 0 {
			t.Errorf("route %s: Dropped = 0, want the drops counted", rs.Name)
		}
		if rs.Name == "allowed" && rs.Connections != 1 {
			t.Errorf("route allowed: Connections = %d, want 1", rs.Connections)
		}
	}
}

// maxRate "N/second" caps new connections: a burst of attempts mostly
// fails, and the drops are counted.
func TestConnectionRateLimit(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	back := netnstest.ServeTCP(t, tp.Bkd, ":9000")
	rate, err := ParseRate("2/second")
	if err != nil {
		t.Fatal(err)
	}
	m := startManager(t, tp, Route{Name: "slow", Ports: []PortRange{{8000, 8000}}, Hosts: addrs(netnstest.BkdAddr4), Port: 9000, MaxRate: rate})
	ok := 0
	for range 30 {
		if _, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, 8000), 150*time.Millisecond); err == nil {
			ok++
		}
	}
	// 30 attempts take at most 4.5 s: the burst (5) and 2/s pass, at most 14.
	if ok == 0 || ok > 15 || len(back.Clients()) != ok {
		t.Errorf("%d of 30 connections made it (backend saw %d); want a few, not all", ok, len(back.Clients()))
	}
	st, _ := m.Status(context.Background())
	if len(st.Routes) != 1 || st.Routes[0].Dropped == 0 {
		t.Errorf("status %+v: want dropped SYNs counted", st)
	}
}

// maxRate in bytes caps bandwidth: a fast UDP burst mostly does not arrive.
func TestBandwidthLimit(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	udp := netnstest.ServeUDP(t, tp.Bkd, ":9000")
	rate, err := ParseRate("100 kbytes/second")
	if err != nil {
		t.Fatal(err)
	}
	m := startManager(t, tp, Route{Name: "narrow", Ports: []PortRange{{8000, 8000}}, Protocol: UDP, Hosts: addrs(netnstest.BkdAddr4), Port: 9000, MaxRate: rate})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := netnstest.Dial(ctx, tp.Cli, "udp", hostPort(netnstest.PrxAddr4, 8000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n, size = 2000, 1200 // 2.4 MB, sent far faster than 100 KiB/s
	buf := make([]byte, size)
	for range n {
		_, _ = c.Write(buf)
	}
	time.Sleep(200 * time.Millisecond) // let the last datagrams land
	if got := udp.Get(); got == 0 || got > n*size/2 {
		t.Errorf("backend received %d of %d bytes; want a part, well under half", got, n*size)
	}
	st, _ := m.Status(context.Background())
	if len(st.Routes) != 1 || st.Routes[0].Dropped == 0 || st.Routes[0].Bytes == 0 {
		t.Errorf("status %+v: want forwarded bytes and drops counted", st)
	}
}
