package smartproxy_test

import (
	"context"
	"fmt"

	"github.com/gosmartproxy/smartproxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Register the proxy's metrics in a registry of your own; a scrape of it
// reads the proxy's counters at that moment. Every route has its series
// from the start, at zero.
func ExampleProxy_Collector() {
	p, err := smartproxy.New(smartproxy.Options{
		Routes: []smartproxy.Route{
			smartproxy.NewRoute("web").Ports(8080).ForwardTo("127.0.0.1:9").Route(),
			smartproxy.NewRoute("api").Ports(8081).ForwardTo("127.0.0.1:9").Route(),
		},
	})
	if err != nil {
		panic(err)
	}
	defer p.Stop(context.Background())

	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collector())
	n, err := testutil.GatherAndCount(reg, "smartproxy_route_connections_total")
	fmt.Println(n, err)
	// Output: 2 <nil>
}
