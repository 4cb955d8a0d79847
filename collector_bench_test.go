package smartproxy

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

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
			httpRouteOn("web", tg.web, web.addr()),
		}})
		if mode == "scraped" {
			b.Cleanup(scrapeEverySecond(b, p.Collector()))
		}
		targets[mode] = tg
	}
	// Both proxies run throughout, and the modes alternate, so that
	// machine noise and TIME_WAIT build-up fall on both alike.
	for _, mode := range []string{"off", "scraped"} {
		b.Run("conn/"+mode, func(b *testing.B) {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(targets[mode].tcp))
			one := make([]byte, 1)
			d := net.Dialer{KeepAlive: -1}
			b.ReportAllocs()
			for b.Loop() {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write([]byte{'x'}); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
	for _, mode := range []string{"off", "scraped"} {
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
