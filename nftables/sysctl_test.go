//go:build linux

package nftables

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The forwarding sysctls a route set needs are reported with their fix.
func TestCheckSysctls(t *testing.T) {
	dir := t.TempDir()
	write := func(key, v string) {
		p := filepath.Join(dir, strings.ReplaceAll(key, ".", "/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("net.ipv4.ip_forward", "0")
	write("net.ipv6.conf.all.forwarding", "1")
	write("net.ipv4.conf.all.route_localnet", "0")
	old := procSys
	procSys = dir
	defer func() { procSys = old }()

	got := strings.Join(CheckSysctls([]Route{{Hosts: addrs("10.0.0.1", "2001:db8::1", "127.0.0.1")}}), "\n")
	for _, want := range []string{"sysctl -w net.ipv4.ip_forward=1", "sysctl -w net.ipv4.conf.all.route_localnet=1"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings %q: want %q", got, want)
		}
	}
	if strings.Contains(got, "ipv6.conf.all.forwarding") {
		t.Errorf("warnings %q: IPv6 forwarding is on, want no warning for it", got)
	}
	write("net.ipv4.ip_forward", "1")
	if got := CheckSysctls([]Route{{Hosts: addrs("10.0.0.1")}}); len(got) != 0 {
		t.Errorf("all set: warnings %q", got)
	}
}
