package smartproxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkHTTPKeepAlive measures requests per second with a 1 KiB
// response over keep-alive connections, directly to the backend and
// through the proxy's HTTP layer (net/http's server, and the HTTP/1.1
// fast path), so the numbers show its cost.
func BenchmarkHTTPKeepAlive(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	be := startEchoServer(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(payload)
	}))
	lp := newListenerPool(b)
	port := lp.port(b)
	startTestProxy(b, lp, Options{Routes: []Route{httpRouteOn("bench", port, be.addr(), "bench.test")}})
	fastPort := lp.port(b)
	startFastTestProxy(b, lp, Options{Routes: []Route{httpRouteOn("bench", fastPort, be.addr(), "bench.test")}})

	run := func(b *testing.B, url string, c *http.Client) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := c.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}
	b.Run("direct", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		run(b, "http://"+be.addr()+"/", &http.Client{Transport: tr})
	})
	for _, p := range []struct {
		name string
		port int
	}{{"proxy", port}, {"proxy-fast", fastPort}} {
		b.Run(p.name, func(b *testing.B) {
			c, _ := proxyClient(b, p.port, nil, false)
			c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
			run(b, "http://bench.test/", c)
			c.Transport.(*http.Transport).CloseIdleConnections()
		})
	}
}

// BenchmarkHTTPKeepAliveReencrypt is BenchmarkHTTPKeepAlive for a
// terminate-and-reencrypt route: TLS keep-alive clients (HTTP/1.1), a
// TLS backend verified against the test CA, through net/http's stack and
// the fast path (whose forward dials the backend itself, h1client).
func BenchmarkHTTPKeepAliveReencrypt(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	be := startTLSEchoServer(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(payload)
	}), pki().backend.tls)
	lp := newListenerPool(b)
	route := func(port int) []Route {
		r := terminateRouteOn("bench", port, be.Listener.Addr().String(), "bench.example.com")
		r.Action.TLS.Mode = TLSTerminateAndReencrypt
		r.Action.TLS.Backend = &BackendTLS{CA: pki().ca.pem}
		return []Route{r}
	}
	for _, fast := range []bool{false, true} {
		name := map[bool]string{false: "proxy", true: "proxy-fast"}[fast]
		port := lp.port(b)
		startStackTestProxy(b, lp, Options{Certificates: newTestStore(b), Routes: route(port)}, fast)
		b.Run(name, func(b *testing.B) { benchTLSGets(b, port, len(payload)) })
	}
}

// BenchmarkHTTPKeepAliveTLS is BenchmarkHTTPKeepAlive over TLS 1.3
// terminated by the proxy (ALPN http/1.1), with a plain HTTP backend:
// bench/run.sh's https scenario in-process, for allocations per request.
func BenchmarkHTTPKeepAliveTLS(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	be := startEchoServer(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(payload)
	}))
	lp := newListenerPool(b)
	for _, fast := range []bool{false, true} {
		name := map[bool]string{false: "proxy", true: "proxy-fast"}[fast]
		port := lp.port(b)
		startStackTestProxy(b, lp, Options{Certificates: newTestStore(b),
			Routes: []Route{terminateRouteOn("bench", port, be.addr(), "bench.example.com")}}, fast)
		b.Run(name, func(b *testing.B) { benchTLSGets(b, port, len(payload)) })
	}
}

// benchTLSGets runs parallel keep-alive GETs of https://bench.example.com/ through the
// proxy's TLS port, each answered with size bytes, and reports requests per second.
func benchTLSGets(b *testing.B, port, size int) {
	c, _ := proxyClient(b, port, insecureTLS("", "http/1.1"), false)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get("https://bench.example.com/")
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	c.Transport.(*http.Transport).CloseIdleConnections()
}

// BenchmarkHTTPChunkedUpload: 16 KiB chunked uploads (the client's
// connection closes after each: a chunked request ends it on both
// stacks), through net/http's stack and the fast path, whose forward
// decodes and re-chunks them.
func BenchmarkHTTPChunkedUpload(b *testing.B) {
	payload := bytes.Repeat([]byte("u"), 16<<10)
	be := startEchoServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
	}))
	lp := newListenerPool(b)
	for _, fast := range []bool{false, true} {
		name := map[bool]string{false: "proxy", true: "proxy-fast"}[fast]
		port := lp.port(b)
		startStackTestProxy(b, lp, Options{Routes: []Route{httpRouteOn("bench", port, be.addr(), "bench.test")}}, fast)
		b.Run(name, func(b *testing.B) {
			c, _ := proxyClient(b, port, nil, false)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					// A reader of unknown length: the client sends it chunked.
					req, _ := http.NewRequest("POST", "http://bench.test/", io.MultiReader(bytes.NewReader(payload)))
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					got, _ := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if string(got) != strconv.Itoa(len(payload)) {
						b.Errorf("backend got %s bytes", got)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			c.Transport.(*http.Transport).CloseIdleConnections()
		})
	}
}
