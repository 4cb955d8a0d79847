package nftables

import (
	"fmt"
	"os"
	"strings"
)

// procSys is where sysctls are read; tests point it elsewhere.
var procSys = "/proc/sys"

// CheckSysctls returns what this host's kernel settings lack for the
// routes, each with the command that fixes it: DNAT to another host needs
// forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding), and
// DNAT of arriving packets to 127.0.0.0/8 needs route_localnet. IPv6
// loopback targets cannot be reached from outside at all.
func CheckSysctls(routes []Route) []string {
	var need4, need6, localnet, loop6 bool
	for i := range routes {
		for _, h := range routes[i].Hosts {
			h = h.Unmap()
			switch {
			case h.Is4() && h.IsLoopback():
				localnet = true
			case h.Is4():
				need4 = true
			case h.IsLoopback():
				loop6 = true
			default:
				need6 = true
			}
		}
	}
	var out []string
	check := func(need bool, key, why string) {
		if need && readSysctl(key) != "1" {
			out = append(out, fmt.Sprintf("%s is not 1: %s; fix: sysctl -w %s=1 (and persist it in /etc/sysctl.d)", key, why, key))
		}
	}
	check(need4, "net.ipv4.ip_forward", "DNAT to another host forwards packets")
	check(need6, "net.ipv6.conf.all.forwarding", "DNAT to another IPv6 host forwards packets")
	check(localnet, "net.ipv4.conf.all.route_localnet", "DNAT of arriving packets to 127.0.0.0/8 needs it (connections made on this host do not)")
	if loop6 {
		out = append(out, "a target is ::1: IPv6 loopback is reachable only by connections made on this host; use an address of an interface")
	}
	return out
}

func readSysctl(key string) string {
	b, err := os.ReadFile(procSys + "/" + strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
