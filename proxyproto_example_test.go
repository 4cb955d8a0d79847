package smartproxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"

	"github.com/gosmartproxy/smartproxy"
)

// Behind a load balancer that sends the PROXY protocol, the client
// address is the one in its header: here the "load balancer" is this
// example, trusted as 127.0.0.1.
func Example_proxyProtocol() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	who := func(_ context.Context, c net.Conn, rc *smartproxy.RouteContext) error {
		_, err := fmt.Fprintf(c, "client %v (header v%d)\n", rc.ClientIP, rc.ProxyHeader.Version)
		return err
	}
	p, err := smartproxy.New(smartproxy.Options{
		AcceptProxyProtocol: true,
		ProxyIPs:            []string{"127.0.0.1"}, // the load balancers
		Routes:              []smartproxy.Route{smartproxy.SocketHandlerRoute("who", smartproxy.Ports(port), nil, who)},
		Listen:              func(context.Context, string, string) (net.Listener, error) { return ln, nil },
		Logger:              quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = p.Stop(context.Background()) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)
	// Output: client 203.0.113.7 (header v1)
}
