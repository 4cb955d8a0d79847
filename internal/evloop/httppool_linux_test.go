//go:build linux

package evloop

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// Requests to two targets, interleaved on one client connection, each go over the target's
// own pooled connection: every answer comes from the backend its path names, and each
// backend accepted one connection (the loop keeps the pool it used last at hand: a lookup
// that mixed targets up would send a request to the other backend).
func TestHTTPPoolPerTarget(t *testing.T) {
	t.Parallel()
	var conns [2]atomic.Int64
	var targets [2]netip.AddrPort
	for i, name := range []string{"a", "b"} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		}))
		srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns[i].Add(1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		targets[i] = netip.MustParseAddrPort(srv.Listener.Addr().String())
	}
	s := startRelay(t, netip.AddrPort{}, Config{Loops: 1,
		OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
			i := 0
			if string(req.Target) == "/b" {
				i = 1
			}
			return HTTPPlan{Target: targets[i], Out: append([]byte(nil), raw...), Replayable: true}
		}})
	c, br := dialHTTP(t, s)
	for i, path := range []string{"a", "b", "b", "a", "a", "b", "a"} {
		if _, err := io.WriteString(c, "GET /"+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, b := readResponse(t, br, "GET"); resp.StatusCode != 200 || string(b) != path {
			t.Fatalf("request %d for /%s: %d %q", i, path, resp.StatusCode, b)
		}
	}
	for i := range conns {
		if n := conns[i].Load(); n != 1 {
			t.Errorf("backend %d accepted %d connections, want 1", i, n)
		}
	}
}
