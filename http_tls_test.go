package smartproxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TLS termination in front of the HTTP layer: ALPN h2 and http/1.1,
// sniffing without ALPN, and terminated streams that are not HTTP.

func TestHTTPSTerminateH2AndHTTP1(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	apiBe := echoBackend(t, "api")
	api := terminateRouteOn("api", port, apiBe.addr(), "www.example.com")
	api.Match.Path = "/api/*"
	startTestProxy(t, lp, Options{Certificates: testCertStore(t),
		Routes: []Route{terminateRouteOn("web", port, be.addr(), "www.example.com"), api}})

	for _, tc := range []struct {
		name   string
		protos []string
		h2     bool
		want   string
	}{
		{"h2", []string{"h2", "http/1.1"}, true, "HTTP/2.0"},
		{"http1.1", []string{"http/1.1"}, false, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, dials := proxyClient(t, port, insecureTLS("www.example.com", tc.protos...), tc.h2)
			resp, body := do(t, c, "GET", "https://www.example.com/x", nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			require.Equal(t, tc.want, resp.Proto)
			require.Contains(t, body, `"backend":"b"`)
			require.Contains(t, body, `"X-Forwarded-Proto":["https"]`)
			e := getEcho(t, c, "GET", "https://www.example.com/api/v1", nil)
			require.Equal(t, "api", e.Backend, "requests are routed per request on one connection")
			require.Equal(t, int64(1), dials.Load())
		})
	}
}

func TestHTTPSTerminateWithoutALPNIsSniffed(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	r := terminateRouteOn("plain", port, be.addr(), "www.example.com")
	r.Action.Options = nil // no HTTP feature
	startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: []Route{r}})

	c := dial(t, port)
	tc := tls.Client(c, insecureTLS("www.example.com")) // a client that offers no ALPN
	require.NoError(t, tc.Handshake())
	require.Empty(t, tc.ConnectionState().NegotiatedProtocol)
	_, err := io.WriteString(tc, "GET /sniffed HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, tc.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), `"path":"/sniffed"`)
	require.Contains(t, string(body), `"X-Forwarded-Proto":["https"]`)
}

func TestTerminatedTLSNotHTTPIsForwardedAsTCP(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	lineBe := startBackend(t, "127.0.0.1:0", echo)
	greetBe := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_, _ = io.WriteString(c, "220 hello\n")
		echo(c)
	})
	term := func(name, addr, domain string) Route {
		r := NewRoute(name).Ports(port).Domains(domain).ForwardTo(addr).Route()
		r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
		return r
	}
	startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: []Route{
		term("line", lineBe.addr(), "line.test"), term("greet", greetBe.addr(), "greet.test"),
	}})

	// A client-speaks-first line protocol, offering its own ALPN: the route
	// offers none, so the handshake succeeds.
	tc := tls.Client(dial(t, port), insecureTLS("line.test", "postgresql"))
	require.NoError(t, tc.Handshake())
	require.Equal(t, "PING x\n", roundTrip(t, tc, "PING x\n"))

	// Server speaks first: nothing is sent, the sniff gives up after its
	// short wait and the greeting comes through.
	tc = tls.Client(dial(t, port), insecureTLS("greet.test"))
	require.NoError(t, tc.Handshake())
	got, err := readN(tc, len("220 hello\n"), 3*time.Second)
	require.NoError(t, err)
	require.Equal(t, "220 hello\n", string(got))
	require.Equal(t, "more\n", roundTrip(t, tc, "more\n"))
}

func TestHTTPSReencrypt(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	srv := startTLSEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "tls=%v proto=%s host=%s", r.TLS != nil, r.Proto, r.Host)
	}), nil)
	addr := srv.addr()
	var routes []Route
	for _, proto := range []string{"http1", "h2"} {
		r := terminateRouteOn("re-"+proto, port, addr, proto+".example.com")
		r.Action.TLS.Mode = TLSTerminateAndReencrypt
		r.Action.TLS.Backend = &BackendTLS{InsecureSkipVerify: true}
		r.Action.Options.BackendProtocol = BackendProtocol(proto)
		routes = append(routes, r)
	}
	startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: routes})
	c, _ := proxyClient(t, port, insecureTLS("", "h2"), true)
	_, body := do(t, c, "GET", "https://http1.example.com/", nil, nil)
	require.Equal(t, "tls=true proto=HTTP/1.1 host="+addr, body)
	_, body = do(t, c, "GET", "https://h2.example.com/", nil, nil)
	require.Equal(t, "tls=true proto=HTTP/2.0 host="+addr, body)
}

// A terminating HTTP route without domains (a catch-all HTTPS site) must
// match: the port reads the ClientHello although no route matches by SNI.
func TestHTTPSTerminateWithoutDomains(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "any")
	startTestProxy(t, lp, Options{Certificates: testCertStore(t),
		Routes: []Route{terminateRouteOn("catch-all", port, be.addr())}})
	for _, h2 := range []bool{false, true} {
		protos := []string{"http/1.1"}
		if h2 {
			protos = []string{"h2", "http/1.1"}
		}
		c, _ := proxyClient(t, port, insecureTLS("www.example.com", protos...), h2)
		require.Equal(t, "any", getEcho(t, c, "GET", "https://www.example.com/x", nil).Backend, "h2=%v", h2)
	}
}
