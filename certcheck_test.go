package smartproxy

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A terminating route whose certificate comes from Options.Certificates
// is refused when there is none (the CLI's case: "auto" without ACME),
// naming the route and the field, instead of failing every handshake.
func TestTerminateWithoutCertificateSourceRefused(t *testing.T) {
	t.Parallel()
	r := NewRoute("web").Ports(443).Domains("a.test").ForwardTo("127.0.0.1:8080").Route()
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Auto: true}}
	_, err := New(Options{Routes: []Route{r}, Logger: testLogger()})
	require.ErrorContains(t, err, `route "web": action.tls.certificate: certificate "auto"`)
	require.ErrorContains(t, err, "Options.Certificates")

	p, err := New(Options{Routes: nil, Logger: testLogger()})
	require.NoError(t, err)
	require.ErrorContains(t, p.UpdateRoutes([]Route{r}), "Options.Certificates", "UpdateRoutes refuses it too")

	_, err = New(Options{Routes: []Route{r}, Logger: testLogger(), Certificates: NewCertStore()})
	require.NoError(t, err, "a store, even empty, may be filled at run time")
}

// A handshake that finds no certificate in the store is logged at WARN
// with the name and a fix, once per burst rather than once per client.
func TestMissingCertificateWarnsOnce(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	lp := newListenerPool(t)
	port := lp.port(t)
	r := NewRoute("web").Ports(port).Domains("*.nowhere.test").ForwardTo("127.0.0.1:1").Route()
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	startTestProxy(t, lp, Options{Routes: []Route{r}, Certificates: NewCertStore(),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	for range 3 {
		tc := tls.Client(dial(t, port), insecureTLS("x.nowhere.test"))
		require.Error(t, tc.Handshake())
		_ = tc.Close()
	}
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "no certificate") }, 5*time.Second, 10*time.Millisecond)
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "level=WARN"), out)
	require.Contains(t, out, "sni=x.nowhere.test")
}
