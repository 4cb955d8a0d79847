package smartproxy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// accessLines parses the JSON access log lines in buf.
func accessLines(t *testing.T, buf *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		if m["msg"] == "access" {
			out = append(out, m)
		}
	}
	return out
}

// TestAccessLogLines: one line per connection and per HTTP request, with
// route, client, target, bytes, duration and close reason or status.
func TestAccessLogLines(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	tcpPort, webPort := lp.port(t), lp.port(t)
	echoTCP := startBackend(t, "127.0.0.1:0", echo)
	web := okBackend(t, nil)
	var buf syncBuffer
	p := startTestProxy(t, lp, Options{
		AccessLog: &AccessLogOptions{Logger: slog.New(slog.NewJSONHandler(&buf, nil))},
		Routes: []Route{
			NewRoute("tcp").Ports(tcpPort).ForwardTo(echoTCP.addr()).Route(),
			httpRouteOn("web", webPort, web.addr(), "web.test"),
		},
	})
	conn := dial(t, tcpPort)
	require.Equal(t, "hello", roundTrip(t, conn, "hello"))
	require.NoError(t, conn.Close())
	client, _ := proxyClient(t, webPort, nil, false)
	resp, _ := do(t, client, "GET", "http://web.test/a?q=1", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	client.CloseIdleConnections()
	requireNoRecords(t, p)
	require.NoError(t, p.Stop(context.Background())) // writes what is queued

	var connLines, reqLines []map[string]any
	for _, l := range accessLines(t, &buf) {
		if l["type"] == "request" {
			reqLines = append(reqLines, l)
		} else {
			connLines = append(connLines, l)
		}
	}
	require.Len(t, connLines, 2)
	require.Len(t, reqLines, 1)
	var tcp map[string]any
	for _, l := range connLines {
		if l["route"] == "tcp" {
			tcp = l
		}
	}
	require.NotNil(t, tcp, connLines)
	require.Equal(t, echoTCP.addr(), tcp["target"])
	require.EqualValues(t, 5, tcp["bytesIn"])
	require.EqualValues(t, 5, tcp["bytesOut"])
	require.Equal(t, "closed", tcp["close"])
	require.True(t, strings.HasPrefix(tcp["client"].(string), "127.0.0.1:"), tcp)
	require.Contains(t, tcp, "duration")
	r := reqLines[0]
	require.Equal(t, "web", r["route"])
	require.Equal(t, "GET", r["method"])
	require.Equal(t, "web.test", r["host"])
	require.Equal(t, "/a", r["path"])
	require.EqualValues(t, 200, r["status"])
	require.Equal(t, web.addr(), r["target"])
	require.EqualValues(t, len("ok:/a"), r["bytesOut"])
}

// blockingHandler is a log handler stuck until release is closed: a log
// sink that cannot keep up.
type blockingHandler struct {
	slog.Handler
	release chan struct{}
}

func (h blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	<-h.release
	return h.Handler.Handle(ctx, r)
}

// TestAccessLogFloodDoesNotBlock: with the log sink stuck, connections
// still finish at full speed; the lines that find the queue full are
// dropped and counted in the metrics. Sampling and the per-second cap
// drop lines as configured.
func TestAccessLogFloodDoesNotBlock(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	echoTCP := startBackend(t, "127.0.0.1:0", echo)
	release := make(chan struct{})
	p := startTestProxy(t, lp, Options{
		AccessLog: &AccessLogOptions{QueueSize: 4,
			Logger: slog.New(blockingHandler{slog.NewTextHandler(io.Discard, nil), release})},
		Routes: []Route{NewRoute("tcp").Ports(port).ForwardTo(echoTCP.addr()).Route()},
	})
	c := p.Collector()
	start := time.Now()
	for range 30 {
		conn := dial(t, port)
		require.Equal(t, "x", roundTrip(t, conn, "x"))
		require.NoError(t, conn.Close())
	}
	requireNoRecords(t, p)
	require.Less(t, time.Since(start), 10*time.Second)
	// Four lines wait in the queue, and one more is with the stuck writer
	// unless it had not taken it yet.
	dropped := testutil.ToFloat64(oneMetric(c, "smartproxy_access_log_dropped_total", "reason", "queue_full"))
	require.Contains(t, []float64{25, 26}, dropped)
	close(release)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(oneMetric(c, "smartproxy_access_log_lines_total")) == 30-dropped
	}, 5*time.Second, 5*time.Millisecond)

	var buf syncBuffer
	sampled := startTestProxy(t, lp, Options{
		AccessLog: &AccessLogOptions{SampleEvery: 3, MaxPerSecond: 2, Logger: slog.New(slog.NewJSONHandler(&buf, nil))},
		Routes:    []Route{NewRoute("tcp").Ports(lp.port(t)).ForwardTo(echoTCP.addr()).Route()},
	})
	sc := sampled.Collector()
	sport := sampled.Ports()[0]
	start = time.Now()
	for range 12 {
		conn := dial(t, sport)
		require.Equal(t, "x", roundTrip(t, conn, "x"))
		require.NoError(t, conn.Close())
	}
	requireNoRecords(t, sampled)
	elapsed := time.Since(start)
	require.NoError(t, sampled.Stop(context.Background()))
	// 12 connections, one in three sampled: 4 lines, of which the cap
	// lets 2 a second through.
	limited := testutil.ToFloat64(oneMetric(sc, "smartproxy_access_log_dropped_total", "reason", "rate_limited"))
	lines := len(accessLines(t, &buf))
	require.Equal(t, 4, lines+int(limited))
	if elapsed < 900*time.Millisecond {
		require.LessOrEqual(t, lines, 4) // at most two seconds touched
		require.GreaterOrEqual(t, lines, 2)
	}
}

// TestAccessLogRateCap: lines past MaxPerSecond in one second are dropped
// and counted, and SampleEvery keeps one line in N, on the log's own
// queue (no writer running, so nothing leaves it). Ten lines in a tight
// loop touch at most two seconds, so at most twice the cap get through.
func TestAccessLogRateCap(t *testing.T) {
	t.Parallel()
	a := newAccessLog(&AccessLogOptions{MaxPerSecond: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for range 10 {
		a.enqueue(accessEntry{})
	}
	require.GreaterOrEqual(t, len(a.q), 2)
	require.LessOrEqual(t, len(a.q), 4)
	require.EqualValues(t, 10-len(a.q), a.limited.Load())

	s := newAccessLog(&AccessLogOptions{SampleEvery: 3}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for range 12 {
		s.enqueue(accessEntry{})
	}
	require.Len(t, s.q, 4)
	require.Zero(t, s.limited.Load())
}
