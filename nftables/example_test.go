package nftables_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/iplist"
	"github.com/gosmartproxy/smartproxy/nftables"
)

// ParseRate reads the TS maxRate forms: new connections per unit, or
// bandwidth.
func ExampleParseRate() {
	for _, s := range []string{"100/second", "10 mbytes/second", "10mbps", "fast"} {
		r, err := nftables.ParseRate(s)
		fmt.Println(r.Kind, r.Count, r.Per, err != nil)
	}
	// Output:
	// 1 100 1 false
	// 2 10485760 1 false
	// 2 1250000 1 false
	// 0 0 0 true
}

// A Manager DNATs a route's ports to its hosts in the kernel. It needs
// CAP_NET_ADMIN, so this example is not run.
func ExampleManager() {
	m, err := nftables.New(nftables.Config{TableName: "smartproxy_web"})
	if err != nil {
		log.Fatal(err) // wraps ErrNoPermission or ErrUnavailable, with the fix
	}
	allow, _ := iplist.Parse([]string{"192.168.0.0/16"})
	ctx := context.Background()
	err = m.Start(ctx, []nftables.Route{{
		Name:     "game",
		Ports:    []nftables.PortRange{{From: 27015, To: 27016}},
		Protocol: nftables.UDP,
		Hosts:    []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")},
		Allow:    allow,
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Stop(ctx)
	st, _ := m.Status(ctx)
	fmt.Println(st.Routes[0].Connections)
}
