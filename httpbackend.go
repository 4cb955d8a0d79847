package smartproxy

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/h1client"
)

// Backend connection pools. One http.Transport per kind of backend
// connection, shared by every route of the proxy that needs that kind:
// cleartext HTTP/1.1, h2c, and per re-encrypting route (its backend TLS
// settings) HTTP/1.1 or h2 over TLS. The number of transports is thus
// bounded by the routes, whatever the clients send.
//
// A re-encrypting route with backend serverName "original" verifies each
// backend connection for the client's SNI, so its connections must not be
// shared across SNIs. Its one transport dials TLS itself (dialTLS)
// and keeps a pool per SNI and target: RoundTrip puts both in the request
// URL's host as a synthetic address (sniAddr), which is what http.Transport
// keys its pools on, and the dialer decodes it back. A connection verified
// for one SNI is therefore never reused for another, and the pooled
// connections of all SNIs share the transport's MaxIdleConns.
//
// Bodyless requests to cleartext HTTP/1.1 backends bypass the transports:
// an h1client.Client (internal/h1client) sends them from the handler goroutine, over
// a pool of its own.

// transportKey is a kind of backend connection.
type transportKey struct {
	proto string    // "http1", "h2c" or "h2"
	tls   *routeTLS // nil: cleartext
}

// transportSet holds the pools, pruned of routes that went away. Lookups
// read an immutable snapshot without locking; the rare insert (a kind not
// seen yet, or the first request after a route change) copies it under mu.
type transportSet struct {
	h    *httpLayer
	mu   sync.Mutex // serializes snapshot rebuilds
	snap atomic.Pointer[transportSnap]
	// gate is the HTTP layer's other per-generation cache: the ports
	// whose requests have their paths canonicalised (httppath.go).
	gate atomic.Pointer[pathGate]
}

// transportSnap is the pools as of one route generation.
type transportSnap struct {
	gen  *routeSet // the route generation m was pruned for
	live map[*routeTLS]bool
	m    map[transportKey]*http.Transport
}

func (ts *transportSet) get(k transportKey) *http.Transport {
	if s := ts.snap.Load(); s != nil && s.gen == ts.h.px.routes() {
		if t := s.m[k]; t != nil {
			return t
		}
	}
	return ts.getSlow(k)
}

// getSlow adds k's pool, after dropping the TLS pools of routes that are
// no longer in the current generation (so that route reloads do not
// accumulate pools).
func (ts *transportSet) getSlow(k transportKey) *http.Transport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	cur := ts.h.px.routes()
	old := ts.snap.Load()
	if old != nil && old.gen == cur {
		if t := old.m[k]; t != nil {
			return t
		}
	}
	s := &transportSnap{gen: cur, live: make(map[*routeTLS]bool)}
	if old != nil && old.gen == cur {
		s.live = old.live
	} else {
		for _, r := range cur.routes {
			if r.state.tls != nil {
				s.live[r.state.tls] = true
			}
		}
	}
	if k.tls != nil && !s.live[k.tls] {
		// A request of a route that a reload has just removed: serve it
		// without pooling rather than keep a pool for a dead route.
		t := ts.h.newTransport(k)
		t.DisableKeepAlives = true
		return t
	}
	var n int
	if old != nil {
		n = len(old.m)
	}
	s.m = make(map[transportKey]*http.Transport, n+1)
	if old != nil {
		for ok, t := range old.m {
			if ok.tls != nil && !s.live[ok.tls] {
				t.CloseIdleConnections()
				continue
			}
			s.m[ok] = t
		}
	}
	t := ts.h.newTransport(k)
	s.m[k] = t
	ts.snap.Store(s)
	return t
}

func (ts *transportSet) closeIdle() {
	if s := ts.snap.Load(); s != nil {
		for _, t := range s.m {
			t.CloseIdleConnections()
		}
	}
}

// newTransport builds a pool. ResponseHeaderTimeout is ConnectTimeout:
// a backend must start answering within that time of receiving the
// request (the body can then stream for as long as it takes).
func (h *httpLayer) newTransport(k transportKey) *http.Transport {
	t := &http.Transport{
		DialContext:           h.dialBackend,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: h.px.connectTimeout,
		TLSHandshakeTimeout:   h.px.connectTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass encodings through untouched
		ReadBufferSize:        16 << 10,
		WriteBufferSize:       16 << 10,
	}
	var protos http.Protocols
	switch k.proto {
	case "h2c":
		protos.SetUnencryptedHTTP2(true)
	case "h2":
		protos.SetHTTP2(true)
	default:
		protos.SetHTTP1(true)
	}
	t.Protocols = &protos
	original := k.tls != nil && k.tls.backendName == "original"
	if k.tls != nil {
		// ServerName "" (backend serverName "target") lets the transport
		// verify each target by its own host name.
		t.TLSClientConfig = k.tls.backendConfig("", "")
		if original {
			var alpn []string
			if k.proto == "h2" {
				alpn = []string{"h2"}
			}
			t.DialTLSContext = h.dialTLS(k.tls, alpn, true)
		}
	}
	if k.proto == "http1" {
		// Connections whose response heads RoundTrip can see
		// (httpbackendtap.go): for TLS, the tap goes over the TLS
		// connection, so this transport dials TLS itself as "original"
		// ones do, with the config it would have used.
		t.DialContext = tapped(h.dialBackend)
		if k.tls != nil {
			t.DialTLSContext = tapped(h.dialTLS(k.tls, nil, original))
		}
	}
	return t
}

// sniAddrSuffix ends the synthetic addresses of sniAddr. The .invalid
// top-level domain is reserved (RFC 6761): no real target has it.
const sniAddrSuffix = ".sni.invalid"

// sniAddr is the synthetic address that stands for target addr reached
// for client SNI sni in the URL of a request on an "original" route's
// transport: the transport keeps a pool per address, so one per SNI and
// target. Both parts are hex-encoded, so any SNI and any address (IPv6
// included) decode back unambiguously.
func sniAddr(addr, sni string) string {
	return net.JoinHostPort("s"+hex.EncodeToString([]byte(sni))+".a"+hex.EncodeToString([]byte(addr))+sniAddrSuffix, "443")
}

// parseSNIAddr reverses sniAddr.
func parseSNIAddr(s string) (addr, sni string, ok bool) {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", false
	}
	host, found := strings.CutSuffix(host, sniAddrSuffix)
	if !found {
		return "", "", false
	}
	sp, ap, found := strings.Cut(host, ".")
	if !found || !strings.HasPrefix(sp, "s") || !strings.HasPrefix(ap, "a") {
		return "", "", false
	}
	sb, err1 := hex.DecodeString(sp[1:])
	ab, err2 := hex.DecodeString(ap[1:])
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	return string(ab), string(sb), true
}

// dialTLS is the TLS dialer of an "original" route's transport (and of
// every HTTP/1.1 transport to TLS backends, httpbackendtap.go): it
// connects to the target that the synthetic address names and verifies
// it for the SNI it names (a config per dial, whose ServerName is that
// SNI, or the target's host for a client without SNI); not original, to
// the address itself, verified as the route's backend serverName says
// (backendConfig, as the transport's TLSClientConfig).
func (h *httpLayer) dialTLS(rt *routeTLS, alpn []string, original bool) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, synthetic string) (net.Conn, error) {
		addr, sni := synthetic, ""
		if original {
			var ok bool
			if addr, sni, ok = parseSNIAddr(synthetic); !ok {
				return nil, fmt.Errorf("dial backend %s: not an SNI address", synthetic)
			}
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, &backendDialError{addr: addr, err: err}
		}
		c, err := h.dialBackend(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := rt.backendConfig(host, sni)
		cfg.NextProtos = alpn
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, h.px.connectTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		return tc, nil
	}
}

// backendTLS is the re-encrypting route's TLS setup, nil for cleartext.
func (h *httpLayer) backendTLS(pr *proxyReq) *routeTLS {
	if rt := pr.route.state.tls; rt != nil && rt.mode == TLSTerminateAndReencrypt {
		return rt
	}
	return nil
}

// dialBackend connects to a backend within ConnectTimeout, through
// Options.Dial when set. Errors are backendDialErrors: nothing was sent.
func (h *httpLayer) dialBackend(ctx context.Context, _, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, h.px.connectTimeout)
	defer cancel()
	c, err := h.px.dial(ctx, addr)
	if err != nil {
		return nil, &backendDialError{addr: addr, err: err}
	}
	return c, nil
}

// backendDialError is a failed backend connect.
type backendDialError struct {
	addr string
	err  error
}

func (e *backendDialError) Error() string { return fmt.Sprintf("dial backend %s: %v", e.addr, e.err) }
func (e *backendDialError) Unwrap() error { return e.err }

// backendTransport is the reverse proxy's RoundTripper: it picks the
// backend per attempt and retries on another target where that is safe.
type backendTransport struct{ h *httpLayer }

// RoundTrip sends out to a target of its route. A failed attempt is
// retried on another host of the target when nothing can have reached
// the backend (the connect failed and no body byte was read), or when
// there is no body, the failure is not a timeout (a slow backend is not
// tried again elsewhere: that would multiply the wait) and the request is
// h1client.Replayable, the one rule for repeating a request that may
// have reached a backend, shared with the synchronous client's retry on
// a fresh connection.
func (bt backendTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	h := bt.h
	pr := out.Context().Value(proxyReqKey{}).(*proxyReq)
	k := transportKey{proto: "http1", tls: h.backendTLS(pr)}
	if hr := pr.route.state.http; hr != nil && !isUpgrade(out) {
		k.proto = hr.backend // upgrades need HTTP/1.1
	}
	if k.proto == "http1" {
		// Every User-Agent to an HTTP/1.1 backend; Go's HTTP/2 encoder
		// would send one value of each spelling, in map order. After the
		// templates (rewriteRequest), which may set one; a retry's second
		// call changes nothing.
		keepUserAgents(out.Header)
	}
	// An "original" route's transport pools per client SNI, through the
	// synthetic address that RoundTrip gives each attempt (see sniAddr).
	original := k.tls != nil && k.tls.backendName == "original"
	hostFromURL := out.Host == "" // the Host header is the target address
	// Bodyless requests to cleartext HTTP/1.1 backends take the
	// synchronous client (internal/h1client); the rest http.Transport.
	var tr http.RoundTripper = h.h1
	if k.proto != "http1" || k.tls != nil || !h1client.Handles(out) {
		tr = h.transports.get(k)
	}
	var body *watchedBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &watchedBody{ReadCloser: out.Body}
		out.Body = body // on the reverse proxy's request: proxyError looks (clientBodyFailed)
	}
	var tap *tapTrace // http.Transport's HTTP/1.1 response heads (httpbackendtap.go)
	if tr != h.h1 && k.proto == "http1" {
		out, tap = withTap(out)
	}
	var triedBuf [4]string
	// One allocation per request holds the lease and, on success, the
	// response body; a failed attempt's lease is released and reused.
	lb := &leasedBody{w: pr.w}
	var resp *http.Response
	err := h.tryHosts(out, pr, body, &lb.Lease, triedBuf[:0], func(addr string) (err error) {
		out.URL.Host = addr
		if original {
			out.URL.Host = sniAddr(addr, pr.hc.rc.Domain)
			if hostFromURL {
				out.Host = addr
			}
		}
		resp, err = tr.RoundTrip(out)
		if tap != nil {
			resp, err = tap.done(resp, err)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Body = lb.wrap(resp.Body)
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// The relay (httpupgrade.go) needs the connection beneath for
		// deadlines and the half-close; takeUpgrade refuses a 101 without.
		ub := &upgradedBackend{body: rw}
		if tap != nil && tap.used != nil {
			ub.Conn = tap.used
		}
		resp.Body = ub
	}
	return resp, nil
}

// tryHosts is the one retry policy of the HTTP layer's backends (the
// reverse proxy's transport and the fast forward): it runs attempt on a
// host of pr's target chosen by the balancer (algorithm, health, hosts
// tried), holding lease on it, and on a failure tries another host while
// retryable allows, the target has hosts left and r's context lives. It
// reports passive health (a failed dial, a success) and returns nil with
// lease held, or the last attempt's error with lease released.
func (h *httpLayer) tryHosts(r *http.Request, pr *proxyReq, body *watchedBody, lease *balance.Lease, tried []string, attempt func(addr string) error) error {
	attempts := h.attempts(pr)
	for {
		addr, err := h.backendAddr(pr, tried)
		if err != nil {
			return err
		}
		tried = append(tried, addr)
		pr.addr = addr
		h.px.acquire(lease, addr)
		if err = attempt(addr); err == nil {
			h.px.succeeded(addr)
			return nil
		}
		lease.Release()
		var de *backendDialError
		dialFailed := errors.As(err, &de)
		if dialFailed {
			h.px.failed(addr, de.err)
		}
		if len(tried) >= attempts || r.Context().Err() != nil || !retryable(r, body, dialFailed, err) {
			return err
		}
	}
}

// retryable reports whether a failed attempt of out may be tried on another
// target (see RoundTrip).
func retryable(out *http.Request, body *watchedBody, dialFailed bool, err error) bool {
	if dialFailed {
		return body == nil || !body.read.Load()
	}
	var ne net.Error
	if body != nil || isUpgrade(out) || errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return h1client.Replayable(out)
}

// attempts is how many targets one request may try.
func (h *httpLayer) attempts(pr *proxyReq) int {
	return hostCount(pr.route, pr.target)
}

// backendAddr chooses the backend of one attempt: the load balancer's
// choice (algorithm, health, tried hosts) among the hosts of the target
// the request's sub-match picked.
func (h *httpLayer) backendAddr(pr *proxyReq, tried []string) (string, error) {
	return h.px.pick(pr.route, pr.target, &pr.rc, tried)
}

// watchedBody is a request body that can be offered to another target:
// the transport's Close (on a failed attempt) does not close it, and it
// tells whether any byte was taken from it.
type watchedBody struct {
	io.ReadCloser
	read   atomic.Bool
	failed atomic.Bool // reading the client's body failed (not at its end)
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.failed.Store(true)
	}
	return n, err
}

// Close is a no-op: the HTTP server closes the request body itself.
func (b *watchedBody) Close() error { return nil }

// leasedBody ends the target's active count (least-connections) when the
// response body is closed (once, however often Close is called).
//
// It also makes a response that breaks off (the backend resets or closes
// mid-body, or right after its head) reach the client as what it is: a
// truncated response. The reverse proxy answers a body read error by
// aborting the handler, and the server then closes the connection
// without flushing what it buffered: a small response, head included,
// vanished and the client saw an empty reply. So before the error is
// returned, everything read so far is flushed to the client: it gets the
// head and the bytes that came, then the close, never the terminating
// chunk (or the rest of the Content-Length) of a complete response.
type leasedBody struct {
	io.ReadCloser
	balance.Lease
	w       http.ResponseWriter // nil: nothing to flush (an upgrade)
	pending error               // a read error held back until the bytes before it are written
}

// wrap makes lb the holder of body and returns what stands for body. An
// upgraded connection's body is writable and stays so, since the upgrade
// relay (httpupgrade.go) writes the WebSocket through it.
func (lb *leasedBody) wrap(body io.ReadCloser) io.ReadCloser {
	lb.ReadCloser = body
	if _, ok := body.(io.ReadWriteCloser); ok {
		lb.w = nil
		return &leasedRWBody{lb}
	}
	return lb
}

// Read returns the body's bytes; a failure other than the end is held
// back while bytes came with it (the reverse proxy writes those first),
// then reported after flushing the client's response.
func (b *leasedBody) Read(p []byte) (int, error) {
	if err := b.pending; err != nil {
		b.flushClient()
		return 0, err
	}
	n, err := b.ReadCloser.Read(p)
	if err == nil || err == io.EOF || b.w == nil {
		return n, err
	}
	if n > 0 {
		b.pending = err
		return n, nil
	}
	b.flushClient()
	return 0, err
}

// flushClient sends what the client's response holds so far, the head
// at least; its error is the client's, and the abort that follows ends
// the exchange anyway.
func (b *leasedBody) flushClient() {
	_ = http.NewResponseController(b.w).Flush()
}

func (b *leasedBody) Close() error {
	err := b.ReadCloser.Close()
	b.Release()
	return err
}

type leasedRWBody struct{ *leasedBody }

func (b *leasedRWBody) Write(p []byte) (int, error) {
	return b.ReadCloser.(io.Writer).Write(p)
}
