package smartproxy

import (
	"crypto/tls"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTicketKeyRotation: after a rotation, tickets issued under the
// previous key still resume (the key is kept); once the key has aged out
// of the ring, they no longer do, and fresh tickets resume again.
func TestTicketKeyRotation(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("one", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}, "route.test"),
	}})
	cfg := caClient("route.test")
	cfg.MaxVersion = tls.VersionTLS12 // one ticket per handshake, easy to reason about
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	resumed := func() bool { return terminated(t, port, cfg).DidResume }

	require.False(t, resumed(), "first connection is a full handshake")
	require.True(t, resumed())
	require.NoError(t, p.rotateTicketKeys())
	require.True(t, resumed(), "a ticket from the previous key still resumes")

	// Age the key that issued the cached ticket out of the ring. TLS 1.2
	// resumption does not replace the ticket, so the cache still holds the
	// one issued by the first key.
	for range ticketKeysKept {
		require.NoError(t, p.rotateTicketKeys())
	}
	require.False(t, resumed(), "a ticket whose key was dropped must not resume")
	require.True(t, resumed(), "the new ticket resumes")
}

// Ticket keys of the ALPN variant of an HTTP route's tls.Config rotate
// like the others: a ticket whose key aged out no longer resumes.
func TestTicketKeyRotationALPNConfig(t *testing.T) {
	t.Parallel()
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
