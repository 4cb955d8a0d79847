package smartproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// ppReporter is a socket handler that answers one line describing what
// the proxy made of the connection (client address, PROXY header), then
// echoes, which shows the bytes after the header were kept.
func ppReporter(_ context.Context, c net.Conn, rc *RouteContext) error {
	line := "client=" + rc.ClientAddr.String() + " remote=" + c.RemoteAddr().String()
	if h := rc.ProxyHeader; h != nil {
		line += fmt.Sprintf(" v%d local=%t alpn=%q authority=%q id=%q", h.Version, h.Local, h.ALPN, h.Authority, h.UniqueID)
		if h.SSL != nil {
			line += fmt.Sprintf(" ssl=%t/%s", h.SSL.ClientSSL, h.SSL.Version)
		}
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	_, _ = io.Copy(c, c)
	return nil
}

// ppProxy starts a proxy that receives PROXY headers from trusted (the
// test's clients dial from 127.0.0.1 unless they pick another loopback
// address) and runs routes on it.
func ppProxy(t *testing.T, lp *listenerPool, trusted []string, routes ...Route) *Proxy {
	t.Helper()
	return startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: trusted, Routes: routes, ProxyHeaderTimeout: time.Second})
}

func handlerRoute(name string, port int) Route {
	return Route{Name: name, Match: RouteMatch{Ports: Ports(port)}, Action: RouteAction{Type: ActionSocketHandler, SocketHandler: ppReporter}}
}

// ppHeader formats a header from src to dst.
func ppHeader(t testing.TB, version byte, src, dst string, tlvs ...proxyproto.TLV) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, tcpAddr(src), tcpAddr(dst))
	if len(tlvs) > 0 {
		require.NoError(t, h.SetTLVs(tlvs))
	}
	b, err := h.Format()
	require.NoError(t, err)
	return b
}

// ppLine reads one line from c within 3 s, byte by byte so that nothing
// after it is consumed.
func ppLine(t testing.TB, c net.Conn) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	var b strings.Builder
	buf := make([]byte, 1)
	for buf[0] != '\n' {
		_, err := c.Read(buf)
		require.NoError(t, err, "got %q", b.String())
		b.WriteByte(buf[0])
	}
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	return strings.TrimSuffix(b.String(), "\n")
}

func TestProxyProtocolReceive(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	ppProxy(t, lp, []string{"127.0.0.1"}, handlerRoute("h", port))
	ssl, err := tlvparse.PP2SSL{Client: tlvparse.PP2_BITFIELD_CLIENT_SSL, TLV: []proxyproto.TLV{{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte("TLSv1.3")}}}.Marshal()
	require.NoError(t, err)
	v2tlvs := ppHeader(t, 2, "198.51.100.7:5555", "192.0.2.1:443",
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte("h2")},
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("a.example.com")},
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("id-1")}, ssl)
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		header []byte
		chunk  int // write the header and payload in pieces of this size (0: one write)
		want   string
	}{
		{"v1", ppHeader(t, 1, "203.0.113.7:40000", "192.0.2.1:80"), 0, "client=203.0.113.7:40000 remote=203.0.113.7:40000 v1 local=false"},
		{"v2", ppHeader(t, 2, "203.0.113.8:40001", "192.0.2.1:80"), 0, "client=203.0.113.8:40001 remote=203.0.113.8:40001 v2 local=false"},
		{"v2 IPv6", ppHeader(t, 2, "[2001:db8::1]:6000", "[2001:db8::2]:443"), 0, "client=[2001:db8::1]:6000 remote=[2001:db8::1]:6000 v2"},
		{"v1 trickled byte by byte", ppHeader(t, 1, "203.0.113.9:1", "192.0.2.1:80"), 1, "client=203.0.113.9:1 "},
		{"v2 split across reads", ppHeader(t, 2, "203.0.113.10:2", "192.0.2.1:80"), 7, "client=203.0.113.10:2 "},
		{"v2 TLVs", v2tlvs, 0, `client=198.51.100.7:5555 remote=198.51.100.7:5555 v2 local=false alpn="h2" authority="a.example.com" id="id-1" ssl=true/TLSv1.3`},
		{"v2 LOCAL uses the socket address", local, 0, "client=127.0.0.1:"},
		{"v1 UNKNOWN uses the socket address", []byte("PROXY UNKNOWN\r\n"), 0, "client=127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, port)
			msg := append(append([]byte{}, tc.header...), "after the header\n"...)
			if tc.chunk > 0 {
				require.NoError(t, writeSlowly(c, msg, tc.chunk, time.Millisecond))
			} else {
				_, err := c.Write(msg)
				require.NoError(t, err)
			}
			r := bufio.NewReader(c)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			require.Contains(t, line, tc.want)
			echoed, err := r.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "after the header\n", echoed, "the bytes after the header reach the route, and nothing of the header")
		})
	}
}

// A connection from a sender that is not trusted must not choose its
// address: a header from it is refused before any backend is dialed.
func TestProxyProtocolUntrustedRefusedBeforeDial(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	tlsPort, httpPort := lp.port(t), lp.port(t)
	be := startBackend(t, "127.0.0.1:0", echo)
	passthrough := NewRoute("tls").Ports(tlsPort).Domains("a.example.com").TLSPassthrough().ForwardTo(be.addr()).Route()
	catchAll := NewRoute("any").Ports(tlsPort).ForwardTo(be.addr()).Route()
	p := ppProxy(t, lp, []string{"10.9.9.9"}, passthrough, catchAll, httpRouteOn("http", httpPort, be.addr(), "a"))
	for _, port := range []int{tlsPort, httpPort} {
		for _, h := range [][]byte{ppHeader(t, 1, "203.0.113.7:1", "192.0.2.1:80"), ppHeader(t, 2, "203.0.113.7:1", "192.0.2.1:80")} {
			c := dial(t, port)
			_, err := c.Write(append(h, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"...))
			require.NoError(t, err)
			_, got := awaitClose(t, c, 3*time.Second)
			require.Empty(t, got)
		}
	}
	requireNoRecords(t, p)
	require.Zero(t, be.accepts.Load(), "the backend saw a connection")
	require.Equal(t, uint64(4), p.Metrics().Rejected["proxy-protocol"])
}

// From a trusted sender the header is required (unless optional), must
// be well formed, and must arrive within the header timeout; otherwise
// the connection closes without a record left or a dial.
func TestProxyProtocolRefusedHeaders(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startBackend(t, "127.0.0.1:0", echo)
	var logs syncBuffer
	p := startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.0/8"}, ProxyHeaderTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Routes: []Route{NewRoute("fw").Ports(port).ForwardTo(be.addr()).Route()}})
	for _, tc := range []struct{ name, send string }{
		{"no header", "hello\r\n"},
		{"v1 bad address", "PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"},
		{"v1 no line end", "PROXY TCP4 " + strings.Repeat("1", 120)},
		{"v1 trailing token", "PROXY TCP4 1.2.3.4 4.5.6.7 1 2 3\r\n"},
		{"v1 port 0", "PROXY TCP4 1.2.3.4 4.5.6.7 0 2\r\n"},
		{"v1 unspecified source", "PROXY TCP4 0.0.0.0 4.5.6.7 1 2\r\n"},
		{"v2 bad version", string(proxyproto.SIGV2) + "\x31\x11\x00\x0c" + strings.Repeat("\x01", 12)},
		{"v2 over the size cap", string(proxyproto.SIGV2) + "\x21\x11\xff\xff"},
		{"v2 truncated TLV", string(proxyproto.SIGV2) + "\x21\x11\x00\x0f" + strings.Repeat("\x01", 12) + "\x01\x00\x05"},
		{"never arrives", ""},
		{"stops half way", "PROXY TCP4 1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, port)
			if tc.send != "" {
				_, err := io.WriteString(c, tc.send)
				require.NoError(t, err)
			}
			el, got := awaitClose(t, c, 3*time.Second)
			require.Empty(t, got)
			require.Less(t, el, 2*time.Second)
		})
	}
	// Connect and close, as load balancers' TCP health checks do: not a
	// refusal.
	require.NoError(t, dial(t, port).Close())
	requireNoRecords(t, p)
	require.Zero(t, be.accepts.Load())
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "closed before its PROXY header") }, 3*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(11), p.Metrics().Rejected["proxy-protocol"])
}

func TestProxyProtocolOptional(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, ProxyProtocol: ProxyProtocolOptional,
		Routes: []Route{handlerRoute("h", port)}})
	c := dial(t, port)
	_, err := c.Write([]byte("hi\n"))
	require.NoError(t, err)
	require.Equal(t, "client="+c.LocalAddr().String()+" remote="+c.LocalAddr().String(), ppLine(t, c))
	c = dial(t, port)
	_, err = c.Write(append(ppHeader(t, 1, "203.0.113.7:9", "192.0.2.1:80"), "hi\n"...))
	require.NoError(t, err)
	require.Contains(t, ppLine(t, c), "client=203.0.113.7:9 ")
}

// The header is read before the ClientHello: the hello right behind it
// (same segment) is still sniffed for SNI, and reaches the backend
// intact, without the header.
func TestProxyProtocolThenClientHello(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	a := startBackend(t, "127.0.0.1:0", echo)
	b := startBackend(t, "127.0.0.1:0", echo)
	ppProxy(t, lp, []string{"127.0.0.1"}, sniRoutes(port, a, b)...)
	for _, v := range []byte{1, 2} {
		hello := tlstest.ToRecords(buildHello("beta.test", 0), 1<<14)
		c := dial(t, port)
		_, err := c.Write(append(ppHeader(t, v, "203.0.113.7:1", "192.0.2.1:443"), hello...))
		require.NoError(t, err)
		got, err := readN(c, len(hello), 3*time.Second)
		require.NoError(t, err)
		require.Equal(t, hello, got)
	}
	require.Zero(t, a.accepts.Load())
	require.Equal(t, int64(2), b.accepts.Load())
}

// The real address decides clientIp matching and per-IP limits, and is
// what metrics count.
func TestProxyProtocolClientIPDecides(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	r := handlerRoute("only-203", port)
	r.Match.ClientIP = []string{"203.0.113.0/24"}
	p := startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, MaxConnectionsPerIP: 1, Routes: []Route{r}})
	c := dial(t, port)
	_, err := c.Write(append(ppHeader(t, 2, "203.0.113.7:1", "192.0.2.1:80"), "x\n"...))
	require.NoError(t, err)
	require.Contains(t, ppLine(t, c), "client=203.0.113.7:1 ")
	require.Equal(t, 1, p.Metrics().ByIP["203.0.113.7"], "metrics count the real address")
	// Same real address: over its limit, although the socket address
	// differs from nothing else.
	c2 := dial(t, port)
	_, err = c2.Write(append(ppHeader(t, 2, "203.0.113.7:2", "192.0.2.1:80"), "x\n"...))
	require.NoError(t, err)
	awaitClose(t, c2, 3*time.Second)
	// Another real address outside clientIp: no route.
	c3 := dial(t, port)
	_, err = c3.Write(append(ppHeader(t, 2, "198.51.100.1:2", "192.0.2.1:80"), "x\n"...))
	require.NoError(t, err)
	awaitClose(t, c3, 3*time.Second)
	m := p.Metrics()
	require.Equal(t, uint64(1), m.Rejected["ip-limit"])
	require.Equal(t, uint64(1), m.Rejected["no-route"])
}

// HTTP routes see the real address: X-Forwarded-For, X-Real-IP,
// Forwarded, {clientIp} and ipAllowList.
func TestProxyProtocolHTTPHeaders(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "be")
	r := httpRouteOn("web", port, be.addr())
	r.Action.Headers = &HeaderActions{Request: map[string]string{"X-Client": "{clientIp}"}}
	r.Security = &RouteSecurity{IPAllowList: []string{"203.0.113.7"}}
	ppProxy(t, lp, []string{"127.0.0.1"}, r)
	get := func(src string) string {
		c := dial(t, port)
		_, err := c.Write(append(ppHeader(t, 1, src, "192.0.2.1:80"), "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"...))
		require.NoError(t, err)
		_, got := awaitClose(t, c, 3*time.Second)
		return string(got)
	}
	resp := get("203.0.113.7:40000")
	require.Contains(t, resp, "200 OK")
	for _, want := range []string{`"X-Forwarded-For":["203.0.113.7"]`, `"X-Real-Ip":["203.0.113.7"]`, `"X-Client":["203.0.113.7"]`, `for=203.0.113.7`} {
		require.Contains(t, resp, want)
	}
	require.NotContains(t, resp, "6.6.6.6")
	require.Contains(t, get("203.0.113.8:40000"), "403", "the allow list is decided on the real address")
}

func TestProxyProtocolOptionsValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{AcceptProxyProtocol: true}, "AcceptProxyProtocol needs ProxyIPs"},
		{Options{ProxyIPs: []string{"10.0.0.300"}}, `ProxyIPs: ip pattern "10.0.0.300"`},
		{Options{ProxyProtocol: "sometimes"}, `ProxyProtocol must be "required" or "optional"`},
		{Options{ProxyProtocol: ProxyProtocolOptional}, "needs AcceptProxyProtocol"},
		{Options{ProxyIPs: []string{"10.0.0.1"}, ProxyHeaderTimeout: -1}, "ProxyHeaderTimeout must not be negative"},
	} {
		_, err := New(tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
}

// A connection that never sends its header holds no record, and Stop
// ends its wait at once rather than after the header timeout.
func TestProxyProtocolStopDuringHeader(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, ProxyHeaderTimeout: time.Minute,
		Routes: []Route{handlerRoute("h", port)}})
	c := dial(t, port)
	_, err := io.WriteString(c, "PROXY TCP4 ")
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // let the proxy wait for the rest
	require.Zero(t, p.Metrics().Active)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Stop(ctx))
	require.Less(t, time.Since(start), 2*time.Second)
	awaitClose(t, c, time.Second)
}

// The header is consumed before the data phase: the copier still gets
// the bare sockets beneath the address wrapper, so an idle connection
// parks (which needs both sockets) and resumes in order.
func TestProxyProtocolForwardedConnectionParks(t *testing.T) {
	p, port := startParkingProxy(t, echo, Options{IdleParkAfter: 40 * time.Millisecond, AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}})
	if p.parker == nil {
		t.Skip("no idle parker on this platform")
	}
	c := dial(t, port)
	_, err := c.Write(append(ppHeader(t, 2, "203.0.113.7:1", "192.0.2.1:80"), "ping"...))
	require.NoError(t, err)
	got, err := readN(c, 4, 3*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping", string(got))
	waitParked(t, p, 2)
	require.Equal(t, "again", roundTrip(t, c, "again"))
	require.Equal(t, 1, p.Metrics().ByIP["203.0.113.7"])
}

// Behind TLS termination too, the backend gets the real address: the
// header comes before the ClientHello, and the HTTP layer reads the
// client from the conn beneath TLS.
func TestProxyProtocolTerminatedHTTP(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "be")
	startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, Certificates: testCertStore(t),
		Routes: []Route{terminateRouteOn("web", port, be.addr(), "a.example.com")}})
	c := dial(t, port)
	_, err := c.Write(ppHeader(t, 2, "203.0.113.7:40000", "192.0.2.1:443"))
	require.NoError(t, err)
	tc := tls.Client(c, insecureTLS("a.example.com", "http/1.1"))
	_, err = io.WriteString(tc, "GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	_, resp := awaitClose(t, tc, 3*time.Second)
	require.Contains(t, string(resp), `"X-Forwarded-For":["203.0.113.7"]`)
}
