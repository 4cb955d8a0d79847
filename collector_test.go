package smartproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// TestCollectorAfterTraffic: real TCP, HTTP and terminated TLS traffic
// through a real proxy shows up in the collector's metrics, which pass
// the Prometheus linter.
func TestCollectorAfterTraffic(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	tcpPort, webPort, tlsPort, deadPort := lp.port(t), lp.port(t), lp.port(t), lp.port(t)
	echoTCP := startBackend(t, "127.0.0.1:0", echo)
	web := okBackend(t, nil)
	dead := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	p := startTestProxy(t, lp, Options{
		Certificates: testCertStore(t),
		Routes: []Route{
			NewRoute("tcp").Ports(tcpPort).ForwardTo(echoTCP.addr()).Route(),
			httpRouteOn("web", webPort, web.addr(), "web.test"),
			terminateRouteOn("secure", tlsPort, web.addr()),
			NewRoute("dead").Ports(deadPort).ForwardTo(dead).Route(),
		},
	})
	c := p.Collector()

	for range 3 {
		conn := dial(t, tcpPort)
		require.Equal(t, "hello", roundTrip(t, conn, "hello"))
		require.NoError(t, conn.Close())
	}
	client, _ := proxyClient(t, webPort, nil, false)
	for range 2 {
		resp, body := do(t, client, "GET", "http://web.test/a", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
	}
	resp, _ := do(t, client, "GET", "http://other.test/", nil, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	tlsClient, _ := proxyClient(t, tlsPort, insecureTLS("a.example.com"), false)
	resp, body := do(t, tlsClient, "GET", "https://a.example.com/x", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	// A client that gives up inside the handshake.
	raw := dial(t, tlsPort)
	require.Error(t, tls.Client(sendOnlyConn{raw}, insecureTLS("a.example.com")).Handshake())
	require.NoError(t, raw.Close())
	deadConn := dial(t, deadPort)
	awaitClose(t, deadConn, 5*time.Second)
	client.CloseIdleConnections()
	tlsClient.CloseIdleConnections()
	requireNoRecords(t, p)

	require.Eventually(t, func() bool {
		return testutil.ToFloat64(oneMetric(c, "smartproxy_tls_handshake_failures_total", "reason", "client_closed")) == 1
	}, 5*time.Second, 10*time.Millisecond)

	want := fmt.Sprintf(`
# HELP smartproxy_route_connections_total Client connections by the route they were served on.
# TYPE smartproxy_route_connections_total counter
smartproxy_route_connections_total{route=""} 1
smartproxy_route_connections_total{route="dead"} 1
smartproxy_route_connections_total{route="secure"} 2
smartproxy_route_connections_total{route="tcp"} 3
smartproxy_route_connections_total{route="web"} 1
# HELP smartproxy_route_received_bytes_total Bytes received from clients by route.
# TYPE smartproxy_route_received_bytes_total counter
smartproxy_route_received_bytes_total{route="dead"} 0
smartproxy_route_received_bytes_total{route="tcp"} 15
# HELP smartproxy_http_requests_total HTTP requests by route and status class.
# TYPE smartproxy_http_requests_total counter
smartproxy_http_requests_total{class="2xx",route="secure"} 1
smartproxy_http_requests_total{class="2xx",route="web"} 2
smartproxy_http_requests_total{class="4xx",route=""} 1
# HELP smartproxy_tls_handshakes_total Completed TLS handshakes of terminating routes, full or resumed.
# TYPE smartproxy_tls_handshakes_total counter
smartproxy_tls_handshakes_total{type="full"} 1
smartproxy_tls_handshakes_total{type="resumed"} 0
# HELP smartproxy_backend_connect_errors_total Failed connects to the backend target.
# TYPE smartproxy_backend_connect_errors_total counter
smartproxy_backend_connect_errors_total{target="%s"} 1
# HELP smartproxy_listener_connections_total Client connections admitted by listener port.
# TYPE smartproxy_listener_connections_total counter
smartproxy_listener_connections_total{port="%d"} 3
smartproxy_listener_connections_total{port="%d"} 1
`, dead, tcpPort, deadPort)
	// Only the lines of these routes and ports: filter the rest out.
	filtered := &filterCollector{c: c, keep: func(s string) bool {
		return !strings.Contains(s, "connect_errors") || strings.Contains(s, dead)
	}, ports: map[string]bool{strconv.Itoa(tcpPort): true, strconv.Itoa(deadPort): true}}
	require.NoError(t, testutil.CollectAndCompare(filtered, strings.NewReader(want),
		"smartproxy_route_connections_total", "smartproxy_http_requests_total", "smartproxy_tls_handshakes_total",
		"smartproxy_backend_connect_errors_total", "smartproxy_listener_connections_total"))
	require.NoError(t, testutil.CollectAndCompare(&filterCollector{c: c, keep: func(s string) bool {
		return strings.Contains(s, `"tcp"`) || strings.Contains(s, `"dead"`)
	}}, strings.NewReader(want), "smartproxy_route_received_bytes_total"))

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
	require.Equal(t, 1.0, testutil.ToFloat64(oneMetric(c, "smartproxy_backend_up", "target", web.addr())))
	require.Greater(t, testutil.ToFloat64(oneMetric(c, "smartproxy_sent_bytes_total")), 15.0)
	// The test store's certificate is reported with its expiry.
	cert := testCert()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	require.Equal(t, float64(leaf.NotAfter.Unix()),
		testutil.ToFloat64(oneMetric(c, "smartproxy_certificate_expiry_timestamp_seconds", "name", "*.example.com")))
}

// TestCollectorCardinality: 10,000 distinct client addresses (127.x.y.z
// on loopback), each connecting twice with the second refused by the
// per-IP rate limit, add no series: no label holds a client.
func TestCollectorCardinality(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections: not in -short")
	}
	// Not parallel: 20,000 connections would load the machine under the
	// package's timing-sensitive parallel tests.
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{
		ConnectionRateLimitPerMinute: 1,
		Routes: []Route{NewRoute("sink").Ports(port).HandleWith(func(_ context.Context, c net.Conn, _ *RouteContext) error {
			_, err := c.Write([]byte("x"))
			return err
		}).Route()},
	})
	c := p.Collector()
	connectFrom := func(i int) {
		ip := fmt.Sprintf("127.%d.%d.%d", 1+i/62500, i/250%250, i%250+1)
		for range 2 {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			conn, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Error(err)
				return
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, conn)
			_ = conn.Close()
		}
	}
	connectFrom(0)
	requireNoRecords(t, p)
	before := testutil.CollectAndCount(c)

	const clients = 10000
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				connectFrom(i)
			}
		})
	}
	for i := 1; i < clients; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	requireNoRecords(t, p)

	require.Equal(t, before, testutil.CollectAndCount(c), "series grew with the number of clients")
	m := p.Metrics()
	require.EqualValues(t, clients, m.Total)
	require.EqualValues(t, clients, testutil.ToFloat64(oneMetric(c, "smartproxy_rejections_total", "reason", "rate-limit")))
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// sendOnlyConn fails every read: a TLS client on it sends its
// ClientHello and gives up.
type sendOnlyConn struct{ net.Conn }

func (sendOnlyConn) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// oneMetric returns the collector's metric of that name with that label
// (or the unlabelled one), failing the test's ToFloat64 when absent.
func oneMetric(c prometheus.Collector, name string, labelValue ...string) prometheus.Collector {
	return &filterCollector{c: c, name: name, label: labelValue}
}

// filterCollector passes on the metrics of c that match: by name and one
// label pair, by a test on the metric's text, and by port label.
type filterCollector struct {
	c     prometheus.Collector
	name  string
	label []string
	keep  func(string) bool
	ports map[string]bool
}

func (f *filterCollector) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }

func (f *filterCollector) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if f.match(m) {
			ch <- m
		}
	}
}

func (f *filterCollector) match(m prometheus.Metric) bool {
	d := m.Desc().String()
	if f.name != "" && !strings.Contains(d, `"`+f.name+`"`) {
		return false
	}
	text := labelText(m)
	if len(f.label) == 2 && !strings.Contains(text, f.label[0]+"="+strconv.Quote(f.label[1])) {
		return false
	}
	if f.keep != nil && !f.keep(d+text) {
		return false
	}
	if f.ports != nil && strings.Contains(d, "listener_connections") {
		for port := range f.ports {
			if strings.Contains(text, `port="`+port+`"`) {
				return true
			}
		}
		return false
	}
	return true
}

// labelText renders a metric's labels as name="value" pairs.
func labelText(m prometheus.Metric) string {
	var pb dto.Metric
	_ = m.Write(&pb)
	var b strings.Builder
	for _, lp := range pb.GetLabel() {
		fmt.Fprintf(&b, "%s=%q ", lp.GetName(), lp.GetValue())
	}
	return b.String()
}

// TestRequestAccountingOffUntilObserved: a proxy nobody observes does no
// per-request accounting (Collector's doc: it costs an allocation per
// request); requests served before Collector is asked are not counted,
// those after are.
func TestRequestAccountingOffUntilObserved(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	webPort := lp.port(t)
	web := okBackend(t, nil)
	p := startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("web", webPort, web.addr(), "web.test")}})
	client, _ := proxyClient(t, webPort, nil, false)
	get := func() {
		resp, body := do(t, client, "GET", "http://web.test/a", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
	}
	get()
	get()
	require.False(t, p.ops.requests.Load())
	c := p.Collector()
	require.Zero(t, testutil.CollectAndCount(c, "smartproxy_http_requests_total"), "counted while nobody observed")
	get()
	client.CloseIdleConnections()
	require.Equal(t, 1.0, testutil.ToFloat64(oneMetric(c, "smartproxy_http_requests_total", "route", "web")))
}
