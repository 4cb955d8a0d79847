//go:build linux

package nftables

import (
	"strings"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/netnstest"
)

// Traffic from the client namespace reaches the backend through DNAT, for
// TCP and UDP over IPv4 and IPv6; masqueraded, the backend sees the proxy.
func TestForwardTCPAndUDP(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	tcp := netnstest.ServeTCP(t, tp.Bkd, ":9000")
	netnstest.ServeUDP(t, tp.Bkd, ":9000")
	startManager(t, tp, Route{Name: "both", Ports: []PortRange{{8000, 8000}}, Protocol: All,
		Hosts: addrs(netnstest.BkdAddr4, netnstest.BkdAddr6), Port: 9000})
	for _, tc := range []struct{ proxy, masq string }{
		{netnstest.PrxAddr4, "10.200.2.1"},
		{netnstest.PrxAddr6, "fd00:2::1"},
	} {
		got, err := netnstest.AskTCP(tp.Cli, hostPort(tc.proxy, 8000), 3*time.Second)
		if err != nil || got != "9000 "+tc.masq {
			t.Errorf("tcp via %s: got %q, %v; want the backend on 9000 seeing %s", tc.proxy, got, err, tc.masq)
		}
		got, err = netnstest.AskUDP(tp.Cli, hostPort(tc.proxy, 8000), 3*time.Second)
		if err != nil || got != "9000 "+tc.masq+" hello" {
			t.Errorf("udp via %s: got %q, %v; want the backend on 9000 seeing %s", tc.proxy, got, err, tc.masq)
		}
	}
	if got := tcp.Clients(); len(got) != 2 {
		t.Errorf("backend saw %v, want two connections", got)
	}
	// A port the route does not take is not forwarded.
	if _, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, 8001), time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("port 8001: err = %v, want connection refused by the proxy host", err)
	}
}
