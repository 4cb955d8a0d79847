package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the admin API server.
type Config struct {
	// Listen is the address to listen on, "127.0.0.1:9900" say. Without
	// a Token it must be a loopback address (or "localhost").
	Listen string
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// every endpoint but /healthz, /readyz and the dashboard's static
	// files. At least MinTokenLen bytes.
	Token string
	// Source is the proxy reported on (required).
	Source Source
	// Collector is exposed at /metrics with the Go runtime and process
	// collectors; nil: the proxy's metrics are left out.
	Collector prometheus.Collector
	// Reload serves POST /reload; nil answers 501.
	Reload Reloader
	// Logger receives the server's errors; nil means slog.Default().
	Logger *slog.Logger
}

// MinTokenLen is the shortest Token accepted: a bearer token is the only
// thing between the network and the proxy's internals.
const MinTokenLen = 16

// Server is a running admin API.
type Server struct {
	cfg   Config
	token [sha256.Size]byte
	ln    net.Listener
	srv   *http.Server
	done  chan struct{}
	once  sync.Once
	err   error
}

// Validate checks cfg: a Source, and a loopback Listen address unless a
// Token is set.
func (cfg *Config) Validate() error {
	if cfg.Source == nil {
		return errors.New("admin: no Source")
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin: listen address %q: %w", cfg.Listen, err)
	}
	if cfg.Token != "" {
		if len(cfg.Token) < MinTokenLen || strings.TrimSpace(cfg.Token) != cfg.Token {
			return fmt.Errorf("admin: the token must be at least %d bytes without surrounding spaces", MinTokenLen)
		}
		return nil
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("admin: refusing to listen on %q without a token: the admin API exposes connections, "+
			"targets, reloads and pprof; listen on 127.0.0.1 or ::1, or set a token (admin.token)", cfg.Listen)
	}
	return nil
}

// isLoopbackHost reports whether host names only loopback: "localhost"
// or a loopback IP. "" and "0.0.0.0" listen everywhere and are not.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Start validates cfg, listens and serves in the background until Close.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &Server{cfg: cfg, ln: ln, done: make(chan struct{})}
	if cfg.Token != "" {
		s.token = sha256.Sum256([]byte(cfg.Token))
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server, waiting for requests in flight until ctx ends
// (then cutting them); open dashboard streams end at once.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		err = s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		<-s.done
		if err == nil {
			err = s.err
		}
	})
	return err
}

// Handler returns the API's handler, for serving it elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	allowed := make(map[string]string) // path -> its method, for 405s
	open := func(pattern string, h http.Handler) {
		method, path, _ := strings.Cut(pattern, " ")
		allowed[path] = method
		mux.Handle(pattern, h)
	}
	guarded := func(pattern string, h http.Handler) { open(pattern, s.auth(h)) }

	open("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	open("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !s.cfg.Source.Ready() {
			writeError(w, http.StatusServiceUnavailable, "not ready: listeners are not up")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}))
	open("GET /{$}", serveStatic("dashboard.html"))
	allowed["/"] = "GET"
	open("GET /dashboard.js", serveStatic("dashboard.js"))
	open("GET /dashboard.css", serveStatic("dashboard.css"))

	guarded("GET /metrics", s.metricsHandler())
	guarded("GET /routes", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": nonNil(s.cfg.Source.Routes())})
	}))
	guarded("GET /connections", http.HandlerFunc(s.connections))
	guarded("GET /targets", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"targets": nonNil(s.cfg.Source.Targets())})
	}))
	guarded("GET /stats", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.cfg.Source.Stats())
	}))
	guarded("POST /reload", http.HandlerFunc(s.reload))
	guarded("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
	guarded("GET /debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	guarded("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	guarded("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	guarded("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if method, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "use "+method)
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return s.sameOrigin(mux)
}

// auth requires the bearer token when one is configured: 401 without
// credentials, 403 with a wrong token. The comparison is of SHA-256
// digests in constant time, so neither the token nor its length leaks.
//
// Without a token (loopback only), a request a browser marks as sent by
// another site (Sec-Fetch-Site) is refused: a page the operator visits
// could otherwise make the browser fetch /debug/pprof/profile or /trace
// over and over (it cannot read the answers, but they cost the proxy).
// The dashboard's own requests are same-origin; curl and Prometheus send
// no Sec-Fetch-Site.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
				writeError(w, http.StatusForbidden, "cross-site request refused")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The scheme is case-insensitive (RFC 9110 11.1): "bearer" is a
		// Bearer token too.
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="smartproxy admin"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], s.token[:]) != 1 {
			writeError(w, http.StatusForbidden, "wrong token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin guards a token-less API, which only loopback can reach,
// against web pages in the operator's browser: a request whose Host is
// not a loopback name is refused (DNS rebinding), and so is a POST that
// a page of another origin sent (the browser names it in Origin).
func (s *Server) sameOrigin(next http.Handler) http.Handler {
	if s.cfg.Token != "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if !isLoopbackHost(host) {
			writeError(w, http.StatusForbidden, "the admin API without a token answers loopback names only")
			return
		}
		if origin := r.Header.Get("Origin"); r.Method != http.MethodGet && origin != "" && origin != "http://"+r.Host {
			writeError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.cfg.Collector != nil {
		reg.MustRegister(s.cfg.Collector)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn)})
}

// Paging limits of GET /connections.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// connections serves one page of the open connections, by ID: ?after=ID
// (exclusive, 0 for the first page) and ?limit=N (at most 1000). The
// answer's next is the after of the next page, 0 on the last.
func (s *Server) connections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := queryUint(q.Get("after"), 0, 1<<63)
	if err != nil {
		writeError(w, http.StatusBadRequest, "after: "+err.Error())
		return
	}
	limit, err := queryUint(q.Get("limit"), defaultPageSize, maxPageSize)
	if err != nil || limit == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want 1-%d", maxPageSize))
		return
	}
	all := s.cfg.Source.Connections()
	i := 0
	for i < len(all) && all[i].ID <= after {
		i++
	}
	page := all[i:min(len(all), i+int(limit))]
	var next uint64
	if i+len(page) < len(all) {
		next = page[len(page)-1].ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"connections": nonNil(page), "total": len(all), "next": next})
}

func queryUint(v string, def, max uint64) (uint64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("want a number 0-%d, got %q", max, v)
	}
	return n, nil
}

// reload runs the Reloader, bounded to a minute.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Reload == nil {
		writeError(w, http.StatusNotImplemented, "reload is not available: the proxy was not started from a config file")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := s.cfg.Reload(ctx); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "reload failed; the running configuration is kept: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"status": N, "error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"status": status, "error": msg})
}
