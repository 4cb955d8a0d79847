package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Backend connection pools. One http.Transport per kind of backend
// connection, shared by every route of the proxy that needs that kind:
// cleartext HTTP/1.1, h2c, and per re-encrypting route (its backend TLS
// settings) HTTP/1.1 or h2 over TLS.

// transportKey is a kind of backend connection.
type transportKey struct {
	proto string    // "http1", "h2c" or "h2"
	tls   *routeTLS // nil: cleartext
	sni   string    // the client's SNI, only for backend serverName "original"
}

// transportSet holds the pools, pruned of routes that went away.
type transportSet struct {
	h   *httpLayer
	mu  sync.Mutex
	m   map[transportKey]*http.Transport
	gen *routeSet // the route generation m was last pruned for
}

func (ts *transportSet) get(k transportKey) *http.Transport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if cur := ts.h.p.set.Load(); cur != ts.gen {
		ts.pruneLocked(cur)
	}
	t := ts.m[k]
	if t == nil {
		if ts.m == nil {
			ts.m = make(map[transportKey]*http.Transport)
		}
		t = ts.h.newTransport(k)
		ts.m[k] = t
	}
	return t
}

// pruneLocked drops the TLS pools of routes no longer in set, so that
// route reloads do not accumulate pools.
func (ts *transportSet) pruneLocked(set *routeSet) {
	ts.gen = set
	live := make(map[*routeTLS]bool)
	for _, r := range set.routes {
		if r.state.tls != nil {
			live[r.state.tls] = true
		}
	}
	for k, t := range ts.m {
		if k.tls != nil && !live[k.tls] {
			t.CloseIdleConnections()
			delete(ts.m, k)
		}
	}
}

func (ts *transportSet) closeIdle() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, t := range ts.m {
		t.CloseIdleConnections()
	}
}

// newTransport builds a pool. ResponseHeaderTimeout is ConnectTimeout:
// a backend must start answering within that time of receiving the
// request (the body can then stream for as long as it takes).
func (h *httpLayer) newTransport(k transportKey) *http.Transport {
	p := h.p
	t := &http.Transport{
		DialContext:           h.dialBackend,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: p.opts.ConnectTimeout,
		TLSHandshakeTimeout:   p.opts.ConnectTimeout,
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
	if k.tls != nil {
		// ServerName "" (backend serverName "target") lets the transport
		// verify each target by its own host name.
		t.TLSClientConfig = k.tls.backendConfig("", k.sni)
	}
	return t
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
	ctx, cancel := context.WithTimeout(ctx, h.p.opts.ConnectTimeout)
	defer cancel()
	c, err := h.p.dial(ctx, addr)
	if err != nil {
		return nil, &backendDialError{addr: addr, err: err}
	}
	h.p.tuneTCP(c)
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
// the backend (the connect failed and no body byte was read), or when the
// method is idempotent, there is no body and the failure is not a
// timeout (a slow backend is not tried again elsewhere: that would
// multiply the wait).
func (bt backendTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	h := bt.h
	pr := out.Context().Value(proxyReqKey{}).(*proxyReq)
	k := transportKey{proto: "http1", tls: h.backendTLS(pr)}
	if hr := pr.route.state.http; hr != nil && !isUpgrade(out) {
		k.proto = hr.backend // upgrades need HTTP/1.1
	}
	if k.tls != nil && k.tls.backendName == "original" {
		k.sni = pr.hc.rc.Domain
	}
	tr := h.transports.get(k)
	var body *watchedBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &watchedBody{ReadCloser: out.Body}
		out.Body = body
	}
	attempts := h.attempts(pr)
	var triedBuf [4]string
	tried := triedBuf[:0]
	// One allocation per request holds the lease and, on success, the
	// response body; a failed attempt's lease is released and reused.
	lb := new(leasedBody)
	for {
		addr, err := h.backendAddr(pr, tried)
		if err != nil {
			return nil, err
		}
		tried = append(tried, addr)
		out.URL.Host = addr
		h.p.acquireLease(&lb.lease, addr)
		resp, err := tr.RoundTrip(out)
		if err == nil {
			h.p.backendSucceeded(addr)
			resp.Body = lb.wrap(resp.Body)
			return resp, nil
		}
		lb.release()
		var de *backendDialError
		dialFailed := errors.As(err, &de)
		if dialFailed {
			h.p.backendFailed(addr, de.err)
		}
		if len(tried) >= attempts || out.Context().Err() != nil || !retryable(out, body, dialFailed, err) {
			return nil, err
		}
	}
}

func retryable(out *http.Request, body *watchedBody, dialFailed bool, err error) bool {
	if dialFailed {
		return body == nil || !body.read.Load()
	}
	var ne net.Error
	if body != nil || isUpgrade(out) || errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	switch out.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// attempts is how many targets one request may try.
func (h *httpLayer) attempts(pr *proxyReq) int {
	if pr.target == 0 {
		return targetHostCount(pr.route)
	}
	t := &pr.route.state.targets[pr.target]
	if t.HostFunc != nil {
		return 1
	}
	return max(1, len(t.Host))
}

// backendAddr chooses the backend of one attempt: the load balancer's
// choice (algorithm, health, tried hosts) among the hosts of the target
// the request's sub-match picked.
func (h *httpLayer) backendAddr(pr *proxyReq, tried []string) (string, error) {
	return h.p.pickBackendFor(pr.route, pr.target, &pr.rc, tried)
}

// watchedBody is a request body that can be offered to another target:
// the transport's Close (on a failed attempt) does not close it, and it
// tells whether any byte was taken from it.
type watchedBody struct {
	io.ReadCloser
	read atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

// Close is a no-op: the HTTP server closes the request body itself.
func (b *watchedBody) Close() error { return nil }

// leasedBody ends the target's active count (least-connections) when the
// response body is closed (once, however often Close is called).
type leasedBody struct {
	io.ReadCloser
	lease
}

// wrap makes lb the holder of body and returns what stands for body. An
// upgraded connection's body is writable and stays so, since the reverse
// proxy relays the WebSocket through it.
func (lb *leasedBody) wrap(body io.ReadCloser) io.ReadCloser {
	lb.ReadCloser = body
	if _, ok := body.(io.ReadWriteCloser); ok {
		return &leasedRWBody{lb}
	}
	return lb
}

func (b *leasedBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

type leasedRWBody struct{ *leasedBody }

func (b *leasedRWBody) Write(p []byte) (int, error) {
	return b.ReadCloser.(io.Writer).Write(p)
}
