package smartproxy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/iplist"
)

// BenchmarkSecurityCheck measures DefaultSecurityChecker.CheckConnection
// against 1,000-entry allow and block lists (mixed exact, CIDR and glob
// patterns) for an admitted client: both lists are searched.
func BenchmarkSecurityCheck(b *testing.B) {
	var allow, block []string
	for i := range 1000 {
		switch i % 3 {
		case 0:
			allow = append(allow, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))
			block = append(block, fmt.Sprintf("192.168.%d.%d", i/256, i%256))
		case 1:
			allow = append(allow, fmt.Sprintf("2001:db8:%x::/48", i))
			block = append(block, fmt.Sprintf("172.16.%d.*", i%256))
		default:
			allow = append(allow, fmt.Sprintf("11.%d.%d.1-11.%d.%d.9", i/256, i%256, i/256, i%256))
			block = append(block, fmt.Sprintf("2001:db9::%x", i))
		}
	}
	a, err := iplist.Parse(allow)
	require.NoError(b, err)
	bl, err := iplist.Parse(block)
	require.NoError(b, err)
	route := &Route{Name: "r", state: &routeState{allow: a, block: bl}}
	rc := &RouteContext{Route: route, RouteName: "r", ClientIP: netip.MustParseAddr("10.2.79.5")}
	var chk SecurityChecker = DefaultSecurityChecker{}
	require.NoError(b, chk.CheckConnection(rc))
	b.ReportAllocs()
	for b.Loop() {
		if chk.CheckConnection(rc) != nil {
			b.Fatal("rejected")
		}
	}
}
