package smartproxy_test

import (
	"context"
	"fmt"
	"net"

	"github.com/gosmartproxy/smartproxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Register the proxy's metrics in a registry of your own; a scrape of it
// reads the proxy's counters at that moment.
func ExampleProxy_Collector() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p, err := smartproxy.New(smartproxy.Options{
		Routes: []smartproxy.Route{smartproxy.NewRoute("web").Ports(port).ForwardTo("127.0.0.1:9").Route()},
		Listen: func(context.Context, string, string) (net.Listener, error) { return ln, nil },
	})
	if err != nil {
		panic(err)
	}
	if err := p.Start(context.Background()); err != nil {
		panic(err)
	}
	defer p.Stop(context.Background())

	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collector())
	n, err := testutil.GatherAndCount(reg, "smartproxy_route_connections_active")
	fmt.Println(n, err)
	// Output: 1 <nil>
}
