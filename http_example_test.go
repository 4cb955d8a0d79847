package smartproxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/gosmartproxy/smartproxy"
)

// ExampleHTTPRoute proxies a request by its Host header. The client is
// connected to the proxy through Proxy.ServeConn, as if accepted on
// port 80, so the example needs no privileged port.
func ExampleHTTPRoute() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s via %s", r.Method, r.URL.Path, r.Header.Get("X-Forwarded-Proto"))
	}))
	defer backend.Close()

	p, err := smartproxy.New(smartproxy.Options{Routes: []smartproxy.Route{
		smartproxy.HTTPRoute("site", []string{"example.com"}, backend.Listener.Addr().String()),
	}})
	if err != nil {
		panic(err)
	}
	defer p.Stop(context.Background())
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		go p.ServeConn(server, 80)
		return client, nil
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://example.com/hello")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK GET /hello via http
}

func ExampleHTTPSTerminateRoute() {
	r := smartproxy.HTTPSTerminateRoute("web", []string{"example.com"}, "10.0.0.5:8080", nil, false)
	fmt.Println(r.Match.Ports[0].From, r.Action.TLS.Mode, r.Action.Options.BackendProtocol)
	// Output: 443 terminate http1
}

func ExampleHTTPToHTTPSRedirectRoute() {
	r := smartproxy.HTTPToHTTPSRedirectRoute("to-https", []string{"example.com", "*.example.com"})
	fmt.Println(r.Match.Ports[0].From, r.Action.Redirect.Status, r.Action.Redirect.To)
	// Output: 80 301 https://{domain}{path}
}

func ExampleHTTPSServer() {
	for _, r := range smartproxy.HTTPSServer("shop", []string{"shop.example.com"}, "10.0.0.7:3000", &smartproxy.CertificateSpec{Auto: true}) {
		fmt.Println(r.Name, r.Match.Ports[0].From)
	}
	// Output:
	// shop 443
	// shop-redirect 80
}

func ExampleLoadBalancerRoute() {
	r := smartproxy.LoadBalancerRoute("lb", []string{"api.example.com"}, smartproxy.Ports(80),
		[]string{"10.0.0.1", "10.0.0.2"}, 8080, "least-connections")
	fmt.Println(r.Action.Targets[0].Host, r.Action.Targets[0].Port, r.Action.LoadBalancing.Algorithm)
	// Output: [10.0.0.1 10.0.0.2] 8080 least-connections
}

func ExampleAPIRoute() {
	r := smartproxy.APIRoute("api", []string{"example.com"}, "/api/", "10.0.0.9:9000", true)
	fmt.Println(r.Match.Path, r.Action.Headers.Response["Access-Control-Allow-Origin"])
	// Output: /api/* *
}

func ExampleWebSocketRoute() {
	r := smartproxy.WebSocketRoute("chat", []string{"chat.example.com"}, "/ws", "10.0.0.3:8000")
	fmt.Println(r.Match.Path, *r.Action.WebSocket.Enabled)
	// Output: /ws true
}
