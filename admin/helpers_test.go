package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/admin"
	"github.com/stretchr/testify/require"
)

// testToken is a token long enough for admin.MinTokenLen.
const testToken = "s3cret-token-for-tests"

// env is a running proxy with a TCP echo route "tcp" and an admin API.
type env struct {
	p     *smartproxy.Proxy
	port  int // the proxy's port of route "tcp"
	admin *admin.Server
	base  string // http://127.0.0.1:PORT of the admin API
}

// startEnv starts an echo backend, a proxy in front of it and an admin
// API configured by cfg (Listen "127.0.0.1:0" when empty; Source and
// Collector filled in). Everything stops when the test ends.
func startEnv(t *testing.T, cfg admin.Config) *env {
	t.Helper()
	backend := startEcho(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	p, err := smartproxy.New(smartproxy.Options{
		Routes:                       []smartproxy.Route{smartproxy.NewRoute("tcp").Ports(port).ForwardTo(backend).Route()},
		MaxConnectionsPerIP:          -1,
		ConnectionRateLimitPerMinute: -1,
		Logger:                       discard(),
		Listen: func(context.Context, string, string) (net.Listener, error) {
			return ln, nil
		},
	})
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Source = p.AdminSource()
	cfg.Collector = p.Collector()
	cfg.Logger = discard()
	s, err := admin.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close(context.Background())) })
	_, aport, _ := net.SplitHostPort(s.Addr().String())
	return &env{p: p, port: port, admin: s, base: "http://127.0.0.1:" + aport}
}

// startEcho runs a TCP echo server on loopback until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c); _ = c.Close() })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echoThrough opens a connection through the proxy and echoes msg; the
// connection stays open until close is called or the test ends.
func (e *env) echoThrough(t *testing.T, msg string) (close func()) {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(e.port), 2*time.Second)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(3*time.Second)))
	_, err = io.WriteString(c, msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
	var once sync.Once
	closeIt := func() { once.Do(func() { _ = c.Close() }) }
	t.Cleanup(closeIt)
	return closeIt
}

// call sends a request to the admin API and returns the status and body.
func (e *env) call(t *testing.T, method, path, token string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// decode parses a JSON body, failing the test on an error.
func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	require.NoError(t, json.NewDecoder(strings.NewReader(body)).Decode(&v), body)
	return v
}

// discard is a logger that formats every record and drops it.
func discard() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
