package smartproxy

import (
	"crypto/tls"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A terminating HTTP route without domains (a catch-all HTTPS site) must
// match: the port reads the ClientHello although no route matches by SNI.
func TestHTTPSTerminateWithoutDomains(t *testing.T) {
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

// Ticket keys of the ALPN variant of an HTTP route's tls.Config rotate
// like the others: a ticket whose key aged out no longer resumes.
func TestTicketKeyRotationALPNConfig(t *testing.T) {
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	p := startTestProxy(t, lp, Options{Certificates: testCertStore(t),
		Routes: []Route{terminateRouteOn("web", port, be.addr(), "www.example.com")}})
	cfg := insecureTLS("www.example.com", "http/1.1")
	cfg.MaxVersion = tls.VersionTLS12
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	resumed := func() bool {
		c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), cfg)
		require.NoError(t, err)
		defer c.Close()
		require.Equal(t, "http/1.1", c.ConnectionState().NegotiatedProtocol, "the ALPN config served it")
		return c.ConnectionState().DidResume
	}
	require.False(t, resumed())
	require.True(t, resumed())
	for range ticketKeysKept {
		require.NoError(t, p.rotateTicketKeys())
	}
	require.False(t, resumed(), "a ticket whose key was dropped must not resume")
}

func TestParseConfigRoutesMustBeAList(t *testing.T) {
	_, err := ParseConfig([]byte("routes:\n  name: a\n  match: {ports: 80}\n"), FormatYAML)
	require.ErrorContains(t, err, "routes must be a list")
	_, err = ParseConfig([]byte(`{}`), FormatJSON)
	require.ErrorContains(t, err, `config has no "routes" list`)
	c, err := ParseConfig([]byte(`{"routes": []}`), FormatJSON)
	require.NoError(t, err)
	require.Empty(t, c.Routes)
}

func TestNewRejectsBrokenOptions(t *testing.T) {
	_, err := New(Options{InitialDataTimeout: -time.Second, MaxClientHelloBytes: 512})
	require.ErrorContains(t, err, "InitialDataTimeout must not be negative")
	require.ErrorContains(t, err, "MaxClientHelloBytes must be at least 16384")
}

// UpdateRoutes revokes access on open keep-alive connections: the next
// request on the same connection is matched against the new routes.
func TestUpdateRoutesAppliesToKeepAliveRequests(t *testing.T) {
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	open := httpRouteOn("web", port, be.addr(), "app.test")
	p := startTestProxy(t, lp, Options{Routes: []Route{open}})
	c, dials := proxyClient(t, port, nil, false)
	require.Equal(t, "b", getEcho(t, c, "GET", "http://app.test/", nil).Backend)

	blocked := open
	blocked.Security = &RouteSecurity{IPBlockList: []string{"127.0.0.1"}}
	require.NoError(t, p.UpdateRoutes([]Route{blocked}))
	resp, _ := do(t, c, "GET", "http://app.test/", nil, nil)
	require.Equal(t, 403, resp.StatusCode)
	require.EqualValues(t, 1, dials.Load(), "the same client connection")
}
