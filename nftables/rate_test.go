package nftables

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	t.Parallel()
	good := map[string]Rate{
		"5/second":        {Kind: ConnRate, Count: 5, Per: 1},
		"60/minute":       {Kind: ConnRate, Count: 60, Per: 60},
		"1 kbytes/second": {Kind: ByteRate, Count: 1024, Per: 1},
		"2 mbytes/minute": {Kind: ByteRate, Count: 2 << 20, Per: 60},
		"100bytes/second": {Kind: ByteRate, Count: 100, Per: 1},
		"8kbps":           {Kind: ByteRate, Count: 1000, Per: 1},
		"1 gbps":          {Kind: ByteRate, Count: 125000000, Per: 1},
	}
	for s, want := range good {
		got, err := ParseRate(s)
		want.Text = s
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"0/second", "5/fortnight", "-1/second", "5 /second", "10 MBps", "1e3/second", "99999999999/second", " 5/second"} {
		if _, err := ParseRate(s); err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("ParseRate(%q): err = %v, want an error naming the value", s, err)
		}
	}
}

func TestRouteValidation(t *testing.T) {
	t.Parallel()
	err := checkRoutes([]Route{
		{Name: "a", Ports: []PortRange{{80, 90}}},
		{Name: "b", Ports: []PortRange{{85, 85}}, Hosts: nil},
	})
	for _, want := range []string{`route "a": hosts`, `route "b": hosts`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	h := []Route{{Name: "a", Ports: []PortRange{{80, 90}}, Hosts: nil}}
	h[0].Hosts = append(h[0].Hosts, mustAddr("10.0.0.1"))
	h = append(h, Route{Name: "b", Ports: []PortRange{{85, 85}}, Protocol: All, Hosts: h[0].Hosts})
	if err := checkRoutes(h); err == nil || !strings.Contains(err.Error(), "port 85 is also taken by route \"a\"") {
		t.Errorf("overlap: err = %v", err)
	}
	h[1].Protocol = UDP
	if err := checkRoutes(h); err != nil {
		t.Errorf("tcp and udp on one port: %v", err)
	}
	h[1].PortMap = map[uint16]uint16{}
	if err := checkRoutes(h); err == nil || !strings.Contains(err.Error(), "port 85 has no target port") {
		t.Errorf("port map: err = %v", err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
