package admin_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/admin"
)

// Serve the admin API of a running proxy on loopback (no token: loopback
// only) and ask whether the proxy is ready.
func Example() {
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

	s, err := admin.Start(context.Background(), admin.Config{
		Listen:    "127.0.0.1:0",
		Source:    p.AdminSource(),
		Collector: p.Collector(),
	})
	if err != nil {
		panic(err)
	}
	defer s.Close(context.Background())

	resp, err := http.Get("http://" + s.Addr().String() + "/readyz")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, " ", string(body))

	// A public address needs a token.
	_, err = admin.Start(context.Background(), admin.Config{Listen: "0.0.0.0:9900", Source: p.AdminSource()})
	fmt.Println(err != nil)
	// Output:
	// 200 {"status":"ready"}
	// true
}
