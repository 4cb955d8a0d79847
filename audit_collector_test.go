package smartproxy

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// findMetric is the collector's metric of family name whose labels
// include every pair of want, or nil.
func findMetric(t *testing.T, c prometheus.Collector, name string, want map[string]string) *dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				return m
			}
		}
	}
	return nil
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// metricValue is the value of the counter or gauge name with the labels
// of want, and whether there is one.
func metricValue(t *testing.T, c prometheus.Collector, name string, want map[string]string) (float64, bool) {
	t.Helper()
	m := findMetric(t, c, name, want)
	switch {
	case m == nil:
		return 0, false
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	}
	return m.GetGauge().GetValue(), true
}

// histogramCount is the sample count of the histogram name with the
// labels of want, and whether there is one.
func histogramCount(t *testing.T, c prometheus.Collector, name string, want map[string]string) (uint64, bool) {
	t.Helper()
	m := findMetric(t, c, name, want)
	if m == nil || m.GetHistogram() == nil {
		return 0, false
	}
	return m.GetHistogram().GetSampleCount(), true
}

// TestAuditCollectorResumptionAndLatency (issue 15): a resumed TLS
// handshake is counted as resumed (TestCollectorAfterTraffic only sees
// resumed=0), and every completed handshake and every HTTP request is a
// sample of its duration histogram.
func TestAuditCollectorResumptionAndLatency(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	web := okBackend(t, nil)
	p := startTestProxy(t, lp, Options{
		Certificates: testCertStore(t),
		Routes:       []Route{terminateRouteOn("secure", port, web.addr())},
	})
	c := p.Collector() // request accounting starts with the first collector
	cfg := insecureTLS("a.example.com")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	client, dials := proxyClient(t, port, cfg, false)
	for range 2 {
		// Reading the response also reads the TLS 1.3 session ticket.
		resp, body := do(t, client, "GET", "https://a.example.com/x", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		client.CloseIdleConnections()
	}
	require.EqualValues(t, 2, dials.Load(), "two connections, two handshakes")
	requireNoRecords(t, p)
	for typ, want := range map[string]float64{"full": 1, "resumed": 1} {
		got, ok := metricValue(t, c, "smartproxy_tls_handshakes_total", map[string]string{"type": typ})
		require.True(t, ok, typ)
		require.Equal(t, want, got, "handshakes of type %s", typ)
	}
	n, ok := histogramCount(t, c, "smartproxy_tls_handshake_duration_seconds", nil)
	require.True(t, ok)
	require.EqualValues(t, 2, n, "handshake duration samples")
	n, ok = histogramCount(t, c, "smartproxy_http_request_duration_seconds", map[string]string{"route": "secure"})
	require.True(t, ok)
	require.EqualValues(t, 2, n, "request duration samples")
}
