//go:build linux

package smartproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// What the event loops must leave to the goroutine path even on a port whose routes are
// all plain forwards: each test fails when its condition in engineEligible/engineRoute is
// taken out, because the loop would then forward the bytes it should have acted on.

// A proxy that receives PROXY headers reads them on the goroutine path: the header of a
// trusted sender is consumed, not forwarded to the backend as data.
func TestEngineLeavesProxyProtocolReceiving(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	opts := Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, ProxyHeaderTimeout: 3 * time.Second}
	p, port := startEngineChoosing(t, opts, func(port int) []Route { return []Route{plainRoute("fwd", port, be.addr())} }, false)
	c := dial(t, port)
	_, err := c.Write(ppHeader(t, 1, "203.0.113.7:40000", "192.0.2.1:80"))
	require.NoError(t, err)
	require.Equal(t, "after\n", roundTrip(t, c, "after\n"), "the backend got the header as data")
	require.NoError(t, c.Close())
	requireNoRecords(t, p)
}

// A route that sends a PROXY header gets it written by dialBackend: at start, and after
// UpdateRoutes turns sending on for the route of a port the loops already serve (its new
// connections are handed off; the loops stay).
func TestEngineLeavesProxyProtocolSending(t *testing.T) {
	t.Parallel()
	be := startPPBackend(t)
	sending := func(port int) Route {
		r := plainRoute("fwd", port, be.addr())
		r.Action.SendProxyProtocol = true
		return r
	}
	check := func(port int) {
		t.Helper()
		c := dial(t, port)
		_, err := io.WriteString(c, "ping\n")
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(ppLine(t, c), "v1 src=127.0.0.1:"), "no PROXY header reached the backend")
		require.Equal(t, "ping", ppLine(t, c))
		require.NoError(t, c.Close())
	}

	p, port := startEngineChoosing(t, Options{}, func(port int) []Route { return []Route{sending(port)} }, false)
	check(port)
	requireNoRecords(t, p)

	p, port = startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("fwd", port, be.addr())} })
	require.NoError(t, p.UpdateRoutes([]Route{sending(port)}))
	require.True(t, servedByEngine(p, port), "the port's loops should stay")
	check(port)
	requireNoRecords(t, p)
}

// A port the ACME manager answers HTTP-01 challenges on is sniffed on the goroutine path
// even when its only route is a raw TCP forward: a challenge request is answered by the
// proxy (404 for an unknown token), not forwarded to the route's backend.
func TestEngineLeavesACMEHTTPPort(t *testing.T) {
	t.Parallel()
	raw := startBackend(t, "127.0.0.1:0", echo)
	site := echoBackend(t, "site")
	for attempt := 0; ; attempt++ {
		acmePort, tlsPort := closedPort(t), closedPort(t)
		pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: acmePort})
		m := pebbleManager(t, pb, acme.Settings{HTTPPort: acmePort, DisableTLSALPN: true})
		p := newTestProxy(t, nil, Options{Engine: EngineEventLoop, ListenAddress: "127.0.0.1", ACME: m, Routes: []Route{
			plainRoute("raw", acmePort, raw.addr()),
			terminateRouteOn("site", tlsPort, site.addr(), "localhost"),
		}})
		if err := p.Start(context.Background()); err != nil {
			if !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
				t.Fatal(err)
			}
			continue
		}
		require.False(t, servedByEngine(p, acmePort), "the ACME HTTP-01 port must keep the goroutine path")
		c := dial(t, acmePort)
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err := io.WriteString(c, "GET /.well-known/acme-challenge/unknownToken HTTP/1.1\r\nHost: localhost\r\n\r\n")
		require.NoError(t, err)
		line, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "HTTP/1.1 404 Not Found\r\n", line, "the challenge request went to the raw backend")
		return
	}
}
