package smartproxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/connection"
)

// Recipes: the README's "Recipes" section points here.

// Routes can be tested without a socket: Options.Dial hands the proxy one
// end of a net.Pipe whose other end a test backend serves, and
// Proxy.ServeConn serves the client's end of another pipe as if it had
// been accepted on a port. Nothing listens, so tests run in parallel and
// never collide on ports.
func ExampleProxy_ServeConn_inMemory() {
	backend := func(c net.Conn) { // upper-cases one line
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(c, strings.ToUpper(line))
	}
	p, err := smartproxy.New(smartproxy.Options{
		Logger: quiet,
		Routes: []smartproxy.Route{smartproxy.NewRoute("shout").Ports(7000).ForwardTo("backend.test:9000").Route()},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			fmt.Println("dial", addr)
			proxySide, backendSide := net.Pipe()
			go backend(backendSide)
			return proxySide, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Stop(context.Background())

	client, proxySide := net.Pipe()
	go func() { _ = p.ServeConn(proxySide, 7000) }()
	_, _ = io.WriteString(client, "hello\n")
	reply, _ := bufio.NewReader(client).ReadString('\n')
	fmt.Print(reply)
	_ = client.Close()
	// Output:
	// dial backend.test:9000
	// HELLO
}

// fromAddr is a conn that reports another client address.
type fromAddr struct {
	net.Conn
	remote net.Addr
}

func (c fromAddr) RemoteAddr() net.Addr { return c.remote }

// admissionCounter wraps the default connection manager to observe every
// admission; the rest of the interface is the embedded manager's.
type admissionCounter struct {
	*connection.Manager
	opened, refused atomic.Int64
}

func (m *admissionCounter) Open(client netip.AddrPort, port int, closer io.Closer) (*connection.Record, error) {
	rec, err := m.Manager.Open(client, port, closer)
	if err != nil {
		m.refused.Add(1)
	} else {
		m.opened.Add(1)
	}
	return rec, err
}

// Wrapping the connection manager: NewConnectionManager builds the
// manager New would build from the same options (limits, timeouts, the
// TS defaults of 100 connections and 300 new ones a minute per client
// IP), so a wrapper starts from the same limits. The options given to New
// leave those fields out: New refuses them next to a manager of your own.
func ExampleNewConnectionManager() {
	m, err := smartproxy.NewConnectionManager(smartproxy.Options{MaxConnectionsPerIP: 1})
	if err != nil {
		log.Fatal(err)
	}
	cm := &admissionCounter{Manager: m}
	p, err := smartproxy.New(smartproxy.Options{
		Logger:      quiet,
		Connections: cm,
		Routes: []smartproxy.Route{smartproxy.SocketHandlerRoute("echo", smartproxy.Ports(7007), nil,
			smartproxy.EchoHandler())},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Stop(context.Background())

	// ServeConn takes the client address from RemoteAddr: pipes have
	// none, so these say they come from one client.
	from := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 40000}
	first, firstProxy := net.Pipe()
	go func() { _ = p.ServeConn(fromAddr{firstProxy, from}, 7007) }()
	_, _ = io.WriteString(first, "x") // the echo proves the first is admitted
	_, _ = io.ReadFull(first, make([]byte, 1))
	second, secondProxy := net.Pipe() // same client address: over the per-IP cap
	_ = p.ServeConn(fromAddr{secondProxy, from}, 7007)
	_ = second.Close()
	_ = first.Close()
	fmt.Println("opened", cm.opened.Load(), "refused", cm.refused.Load())

	// Setting the limits on both is refused, naming the fields.
	_, err = smartproxy.New(smartproxy.Options{Logger: quiet, Connections: cm, MaxConnectionsPerIP: 5})
	fmt.Println(err != nil && strings.Contains(err.Error(), "MaxConnectionsPerIP"))
	// Output:
	// opened 1 refused 1
	// true
}

// A socket handler blocked in Read must still return promptly when a
// graceful Stop begins: RouteContext.Draining is closed then (the
// context is cancelled only when Stop gives up). Moving the read deadline
// into the past wakes the blocked Read; the handler then says goodbye.
func ExampleRouteContext_draining() {
	handler := func(ctx context.Context, conn net.Conn, rc *smartproxy.RouteContext) error {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-rc.Draining:
				_ = conn.SetReadDeadline(time.Now()) // wakes the Read below
			case <-ctx.Done():
			case <-stop:
			}
		}()
		buf := make([]byte, 512)
		for {
			n, err := conn.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				_, err = io.WriteString(conn, "server going away\n")
				return err
			}
			if err != nil {
				return err
			}
			if _, err := conn.Write(buf[:n]); err != nil {
				return err
			}
		}
	}
	p, err := smartproxy.New(smartproxy.Options{
		Logger: quiet,
		Routes: []smartproxy.Route{smartproxy.SocketHandlerRoute("chat", smartproxy.Ports(7100), nil, handler)},
	})
	if err != nil {
		log.Fatal(err)
	}
	client, proxySide := net.Pipe()
	go func() { _ = p.ServeConn(proxySide, 7100) }()
	r := bufio.NewReader(client)
	_, _ = io.WriteString(client, "hi\n")
	line, _ := r.ReadString('\n')
	fmt.Print(line)

	stopped := make(chan bool)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		err := p.Stop(ctx)
		stopped <- err == nil && time.Since(start) < 10*time.Second
	}()
	line, _ = r.ReadString('\n')
	fmt.Print(line)
	_ = client.Close()
	fmt.Println("stopped promptly:", <-stopped) // printed here: Stop may return before the line above
	// Output:
	// hi
	// server going away
	// stopped promptly: true
}

// An edge service on non-standard ports: plain HTTP on 8080 redirects to
// HTTPS on 8443 (the redirect template names the port, since the default
// https URL would drop it), where TLS is terminated and requests are
// proxied. The redirect is shown through an in-memory connection.
func ExampleRouteAction_redirect_edgeService() {
	redirect := smartproxy.NewRoute("to-https").Ports(8080).Domains("app.example.com").Route()
	redirect.Action.Redirect = &smartproxy.Redirect{To: "https://{domain}:8443{path}", Status: 308}
	app := smartproxy.NewRoute("app").Ports(8443).Domains("app.example.com").ForwardTo("10.0.0.5:8080").Route()
	app.Action.TLS = &smartproxy.RouteTLS{Mode: smartproxy.TLSTerminate, Certificate: &smartproxy.CertificateSpec{Auto: true}}
	p, err := smartproxy.New(smartproxy.Options{
		Logger:       quiet,
		Routes:       []smartproxy.Route{redirect, app},
		Certificates: smartproxy.NewCertStore(), // Add the app's certificate here
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Stop(context.Background())
	fmt.Println("ports", p.Ports())

	client, proxySide := net.Pipe()
	go func() { _ = p.ServeConn(proxySide, 8080) }()
	_, _ = io.WriteString(client, "GET /login?next=%2F HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		log.Fatal(err)
	}
	_ = resp.Body.Close()
	_ = client.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Location"))
	// Output:
	// ports [8080 8443]
	// 308 https://app.example.com:8443/login?next=%2F
}
