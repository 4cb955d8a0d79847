package smartproxy

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkCollectorConnRate measures the metrics' cost on the hot path:
// connections per second through a forward route (connect, one byte each
// way, close) and HTTP requests on a kept-alive connection, on a proxy
// nobody observes ("off") and on one whose collector is registered and
// scraped every second ("scraped"), in the same run. The scraped proxy
// also pays the per-request accounting the collector switches on.
func BenchmarkCollectorConnRate(b *testing.B) {
	be := startBackend(b, "127.0.0.1:0", echo)
	web := okBackend(b, nil)
	type target struct{ tcp, web int }
	targets := map[string]target{}
	for _, mode := range []string{"off", "scraped"} {
		lp := newListenerPool(b)
		tg := target{lp.port(b), lp.port(b)}
		p := startTestProxy(b, lp, Options{Routes: []Route{
			plainRoute("bench", tg.tcp, be.addr()),
			httpRouteOn("web", tg.web, web.addr(), "bench.test"), // a domain: the HTTP layer serves it
		}})
		if mode == "scraped" {
			b.Cleanup(scrapeEverySecond(b, p.Collector()))
		}
		targets[mode] = tg
	}
	// Both proxies run throughout, and the modes take turns (three rounds,
	// the order flipped each round), so that machine noise and TIME_WAIT
	// build-up fall on both alike. Compare with benchstat after stripping
	// the "#NN" suffixes.
	for round := range 3 {
		modes := []string{"off", "scraped"}
		if round%2 == 1 {
			modes = []string{"scraped", "off"}
		}
		for _, mode := range modes {
			b.Run("conn/"+mode, func(b *testing.B) {
				connectEchoLoop(b, net.JoinHostPort("127.0.0.1", strconv.Itoa(targets[mode].tcp)))
			})
		}
	}
	for _, mode := range []string{"off", "scraped", "off", "scraped"} {
		b.Run("http/"+mode, func(b *testing.B) {
			client, _ := proxyClient(b, targets[mode].web, nil, false)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get("http://bench.test/x")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatal(resp.Status)
				}
			}
			client.CloseIdleConnections()
		})
	}
}

// scrapeEverySecond gathers c from a registry once a second, as a
// Prometheus server would, until stop is called.
func scrapeEverySecond(b *testing.B, c prometheus.Collector) (stop func()) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if _, err := reg.Gather(); err != nil {
					b.Error(err)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// BenchmarkOpsAccounting is the CPU the operability counters add to one
// connection (opened + connDone: two label lookups, a record copy, six
// atomic adds) and to one HTTP request (status class and latency), apart
// from the noise of sockets; what a scrape costs is measured with 1,000
// open connections on 20 routes.
func BenchmarkOpsAccounting(b *testing.B) {
	m, err := connection.NewManager(connection.Config{})
	if err != nil {
		b.Fatal(err)
	}
	o := newOpsState(nil)
	client := netip.MustParseAddrPort("192.0.2.1:40000")
	pc := &proxiedConn{}
	b.Run("connection", func(b *testing.B) {
		rec, err := m.Open(client, 443, pc)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.AssignRoute(rec, "web", "", 0); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			o.opened(443)
			o.connDone(rec, pc)
		}
		m.Close(rec)
	})
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.request("web", 200, 3*time.Millisecond)
		}
	})
	b.Run("scrape-1000-conns", func(b *testing.B) {
		lp := newListenerPool(b)
		var routes []Route
		for i := range 20 {
			routes = append(routes, plainRoute("r"+strconv.Itoa(i), lp.port(b), "127.0.0.1:9"))
		}
		p := newTestProxy(b, lp, Options{Routes: routes})
		for i := range 1000 {
			rec, err := p.conns.Open(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1), 80, pc)
			if err != nil {
				b.Fatal(err)
			}
			_ = p.conns.AssignRouteLimits(rec, "r"+strconv.Itoa(i%20), "", connection.RouteLimits{})
			defer p.conns.Close(rec)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(p.Collector())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
