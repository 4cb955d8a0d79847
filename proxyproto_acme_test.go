package smartproxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// On a port sniffed only briefly (a raw TCP route on the ACME HTTP-01 port), the check for
// an untrusted PROXY header waits no longer than the sniffing does: a client that waits
// for a server-speaks-first backend gets its banner after the brief wait, not after the
// whole InitialDataTimeout.
func TestProxyProtocolUntrustedCheckKeepsBriefWait(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	acmePort, tlsPort := lp.port(t), lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: acmePort})
	raw := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_, _ = c.Write([]byte("banner\n"))
		echo(c)
	})
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{HTTPPort: acmePort, DisableTLSALPN: true})
	startTestProxy(t, lp, Options{ACME: m, AcceptProxyProtocol: true, ProxyIPs: []string{"10.9.9.9"},
		InitialDataTimeout: 20 * time.Second, Routes: []Route{
			NewRoute("raw").Ports(acmePort).ForwardTo(raw.addr()).Route(),
			terminateRouteOn("site", tlsPort, site.addr(), "localhost"),
		}})
	c := dial(t, acmePort)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "silence: the backend speaks first")
	require.Equal(t, "banner\n", line)
}
