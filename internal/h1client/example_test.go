package h1client_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1client"
)

func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
	}))
	defer backend.Close()

	d := &net.Dialer{Timeout: 5 * time.Second}
	c := h1client.New(h1client.Config{Dial: d.DialContext, HeadTimeout: 10 * time.Second})
	defer c.CloseIdleConnections()

	for _, path := range []string{"/a", "/b"} {
		req, _ := http.NewRequest("GET", backend.URL+path, nil)
		if !h1client.Handles(req) {
			continue // a body, an upgrade: http.Transport's
		}
		resp, err := c.RoundTrip(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		b, _ := io.ReadAll(resp.Body) // read to its end: the connection is pooled again
		_ = resp.Body.Close()
		fmt.Println(resp.StatusCode, string(b), c.IdleConns())
	}
	// Output:
	// 200 GET /a 1
	// 200 GET /b 1
}
