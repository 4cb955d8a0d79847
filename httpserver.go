package smartproxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/h1client"
)

// The HTTP layer: one http.Server per proxy, fed by serve() through an
// in-memory listener. serve() keeps owning each connection (its record,
// its proxiedConn, the handlers WaitGroup): it blocks until the server is
// done with the conn (closed, or hijacked and the hijacker finished), then
// releases it exactly as for a TCP connection.

// Timeouts of the HTTP layer.
const (
	// terminatedSniffWait is how long a terminated TLS stream without
	// ALPN is watched for an HTTP request line before it is forwarded as
	// TCP (protocols where the server speaks first send nothing).
	terminatedSniffWait = 500 * time.Millisecond
	// maxHTTPHeaderBytes caps a proxied request's head.
	maxHTTPHeaderBytes = 64 << 10
)

// httpLimits bound what a client may take of an http.Server.
type httpLimits struct {
	// headTimeout bounds reading a request head once it has begun.
	headTimeout time.Duration
	// idleTimeout closes a keep-alive connection idle that long.
	idleTimeout time.Duration
	// maxHeaderBytes caps a request head.
	maxHeaderBytes int
}

// newHTTPServer is the one http.Server setup of the proxy, shared by the
// HTTP layer and HTTPServerHandler so that their limits cannot drift
// apart again: only the handler, the base context and the limits differ.
// Callers add their own connection tracking (ConnState, ConnContext) and,
// for the HTTP layer, HTTP/2.
func newHTTPServer(h http.Handler, base context.Context, lim httpLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.headTimeout,
		IdleTimeout:       lim.idleTimeout,
		MaxHeaderBytes:    lim.maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
}

// httpLayer is a proxy's HTTP server, reverse proxy and backend pools.
type httpLayer struct {
	// px is all the layer knows of the proxy (httpseam.go).
	px proxySeam
	// idleTimeout is the keep-alive idle timeout; tests lower it before
	// the first HTTP connection.
	idleTimeout time.Duration

	mu             sync.Mutex
	srv            *http.Server
	ln             *chanListener
	stopped        bool
	serveDone      chan struct{}
	shutdownCancel context.CancelFunc
	shutdownDone   chan struct{}

	conns      sync.Map // net.Conn given to srv -> *httpConn
	transports transportSet
	h1         *h1client.Client // bodyless cleartext requests, and the fast forward's
	rp         *httputil.ReverseProxy

	fastConns sync.Map    // *fastConn -> struct{}: connections on the fast path
	fastStop  atomic.Bool // shutting down: fast connections end after their request
}

func newHTTPLayer(px proxySeam) *httpLayer {
	idle := httpIdleTimeout
	if in := px.inactivityTimeout; in > 0 && in < idle {
		idle = in
	}
	h := &httpLayer{px: px, idleTimeout: idle}
	h.transports.h = h
	h.h1 = h1client.New(h1client.Config{Dial: h.dialBackend, HeadTimeout: px.connectTimeout,
		HandshakeTimeout: px.connectTimeout}) // the transports' TLSHandshakeTimeout
	h.rp = newReverseProxy(h)
	return h
}

// httpConn is what the HTTP layer knows of one client connection.
type httpConn struct {
	rc         RouteContext  // connection info: port, client, SNI, TLS version, id
	admission  connAdmission // which route's connection-level checks passed on accept
	terminated bool
	// acmeOnly: a connection on an ACME HTTP-01 port whose routes do not
	// take plain HTTP; only challenges are answered on it.
	acmeOnly bool
	rec      *connection.Record
	meter    *meterConn
	// owner holds the connection's sockets as the connection manager
	// kills them; an upgraded stream adds its backend (relayUpgrade).
	// nil in tests that serve a bare conn.
	owner *proxiedConn

	hijacked atomic.Bool
	once     sync.Once
	done     chan struct{}
}

// finish tells serve() the server is done with the connection.
func (hc *httpConn) finish() { hc.once.Do(func() { close(hc.done) }) }

type httpConnKey struct{}

// serve hands conn to the HTTP server and blocks until it is done with it.
func (h *httpLayer) serve(conn net.Conn, hc *httpConn) {
	if hc.meter != nil {
		hc.meter.wt = h.px.writeTimeout
		if hc.terminated {
			hc.meter.dropDrainedPeek() // the handshake read the sniffed hello
			hc.meter.rawCalls()
		}
	}
	if st, ok := fastEligibleConn(conn); ok && h.px.fastPath && !h.fastStop.Load() {
		if conn = h.serveFast(conn, hc, st); conn == nil {
			return
		}
	}
	ln := h.listener()
	if ln == nil {
		return // stopping
	}
	hc.done = make(chan struct{})
	h.conns.Store(conn, hc)
	defer h.conns.Delete(conn)
	if !ln.push(conn) {
		return
	}
	<-hc.done
}

// listener starts the server on first use; nil once stopping.
func (h *httpLayer) listener() *chanListener {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil
	}
	if h.srv == nil {
		h.start()
	}
	return h.ln
}

// headTimeout bounds reading a request head once it has begun (the
// first bytes of a connection are waited for with InitialDataTimeout, the
// next request's with the idle timeout): 30 s, as for HTTPServerHandler,
// or InitialDataTimeout when that is shorter. InitialDataTimeout alone
// (120 s by default) would let a client trickling a head hold a
// connection for two minutes.
func (h *httpLayer) headTimeout() time.Duration {
	return min(h.px.initialDataTimeout, requestHeadTimeout)
}

func (h *httpLayer) start() {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge ("PRI * HTTP/2.0")
	h.ln = newChanListener()
	h.srv = newHTTPServer(h, h.px.baseCtx, httpLimits{
		headTimeout:    h.headTimeout(),
		idleTimeout:    h.idleTimeout,
		maxHeaderBytes: maxHTTPHeaderBytes,
	})
	h.srv.Protocols = &protos
	h.srv.ErrorLog = slog.NewLogLogger(h.px.log.Handler(), slog.LevelDebug)
	h.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if hc, ok := h.conns.Load(c); ok {
			return context.WithValue(ctx, httpConnKey{}, hc)
		}
		return ctx
	}
	h.srv.ConnState = h.connState
	h.srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams: h2MaxStreams,
		// RFC 9113's default frame size rather than Go's 1 MiB: a
		// larger frame is refused with FRAME_SIZE_ERROR, as clients
		// (and h2spec) expect from a server that did not announce more.
		MaxReadFrameSize: 16 << 10,
	}
	h.serveDone = make(chan struct{})
	srv, ln := h.srv, h.ln
	// Serve sets up its HTTP/2 support before its first Accept, and the
	// connection-serving goroutines start after it: the guard is put in
	// front of it in between.
	ln.beforeAccept = sync.OnceFunc(func() { h.guardHTTP2(srv) })
	go func() {
		defer close(h.serveDone)
		_ = srv.Serve(ln)
	}()
}

// connState learns when the server is done with a connection. A hijacked
// connection (WebSocket, socket-handler handover) is finished by the
// handler that hijacked it, when it returns.
func (h *httpLayer) connState(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateHijacked, http.StateClosed:
		v, ok := h.conns.Load(c)
		if !ok {
			return
		}
		hc := v.(*httpConn)
		if s == http.StateHijacked {
			hc.hijacked.Store(true)
		} else {
			hc.finish()
		}
	}
}

// beginShutdown stops taking connections and closes idle keep-alive ones;
// active ones are closed once their response is done.
func (h *httpLayer) beginShutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.fastStop.Store(true)
	h.fastConns.Range(func(k, _ any) bool {
		if fc := k.(*fastConn); fc.idle.Load() {
			_ = fc.conn.SetReadDeadline(time.Now()) // wakes its wait for a next request
		}
		return true
	})
	if h.srv == nil || h.shutdownDone != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.shutdownCancel, h.shutdownDone = cancel, make(chan struct{})
	srv, done := h.srv, h.shutdownDone
	go func() {
		defer close(done)
		_ = srv.Shutdown(ctx)
	}()
}

// close ends the server and its goroutines and the backend pools. Called
// by Stop once every connection is finished (or cut).
func (h *httpLayer) close() {
	h.beginShutdown()
	h.mu.Lock()
	srv := h.srv
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
		h.shutdownCancel()
		<-h.shutdownDone
		<-h.serveDone
	}
	h.transports.closeIdle()
	h.h1.CloseIdleConnections()
}

// chanListener is the http.Server's listener: serve() pushes connections.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	// beforeAccept, when set, runs at the start of every Accept (from the
	// server's Serve goroutine).
	beforeAccept func()
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the server; false when the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	if l.beforeAccept != nil {
		l.beforeAccept()
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// tlsPeekConn is a terminated TLS stream whose first bytes were sniffed
// (no ALPN). It is not a *tls.Conn, so it reports the TLS state itself:
// http.Server fills r.TLS from ConnectionState.
type tlsPeekConn struct {
	*forwarding.PeekConn
	state tls.ConnectionState
}

// ConnectionState returns the TLS state of the terminated connection.
func (c *tlsPeekConn) ConnectionState() tls.ConnectionState { return c.state }
