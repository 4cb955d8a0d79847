//go:build linux

package smartproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// Plain HTTP/1.1 on the event loops (internal/evloop's HTTP mode): a port whose connections
// the loop may serve (engineHTTPPort) is accepted by the loops, and each request runs the
// fast path's own steps there, with no goroutine: fastConn.request builds the *http.Request,
// serveRequest's framing refusals and ACME answer, then decide (route, admit, check, plan)
// with its eligible hook, the answers written by a fastWriter into a buffer the loop sends.
// A forward's head is appendFastRequest's, its target the balancer's choice, its response
// head relayed through appendRelayedFields, as the goroutine fast path's (httpfastforward*.go);
// passive health, leases, the retry rule and the 502/504 answers are the same functions.
//
// What the loop does not carry, it hands to the goroutine path with the bytes it read, and
// the connection goes on there under the same record and httpConn (admission, route
// counts): a request that is not HTTP/1.1 origin-form, an upgrade, Expect, a chunked body or
// one over the loop's held size, a route the loop cannot forward (loopHTTPRoute says), and
// a connection's first bytes when they are not a request (the h2c preface).

// engineHTTPPort reports whether the loops may serve port's connections in HTTP mode: a
// plain-HTTP port (no PROXY headers in) on the fast path, with the built-in matcher,
// connection manager and security checker (the loop must never call code that may block).
// Connections whose first bytes are not a request (TLS for the port's TLS routes, raw TCP for
// its other routes) go to serve's classification on the goroutine path (malformed).
func (p *Proxy) engineHTTPPort(set *routeSet, port int) bool {
	plan, ok := set.ports[port]
	return ok && plan.plainHTTP && p.loopHTTPParts(set)
}

// loopHTTPParts reports whether the loops may serve set's HTTP at all, plain or terminated:
// the fast path, and the built-in parts the loop calls (loopParts, the default security
// checker).
func (p *Proxy) loopHTTPParts(set *routeSet) bool {
	return p.fastPath() && p.http.px.defaultChecker && p.loopParts(set)
}

// fastPath reports that HTTP/1.1 is served on the fast path (not Options.DisableHTTPFastPath).
func (p *Proxy) fastPath() bool { return p.http.px.fastPath }

// loopHTTPRoute reports whether the loop can forward a request of route r by itself: a
// forward to cleartext HTTP/1.1 backends at IP-literal hosts, sending no PROXY header, whose
// checks do not block (a JWKS fetch, bcrypt: the loop would stall every connection it serves).
func loopHTTPRoute(r *Route) bool { return loopRoute(r, false) }

// loopTLSRoute is loopHTTPRoute for requests on a terminated connection: the route terminates
// TLS (a re-encrypting route's backend speaks TLS, which the loop does not).
func loopTLSRoute(r *Route) bool { return loopRoute(r, true) }

// loopRoute is loopHTTPRoute (terminated false: a route without TLS) and loopTLSRoute.
func loopRoute(r *Route, terminated bool) bool {
	st := r.state
	if r.Action.Type != ActionForward || st == nil || st.sendPP != 0 || !st.ipTargets || st.sec.mayBlock() {
		return false
	}
	if terminated != (st.tls != nil) || terminated && st.tls.mode != TLSTerminate {
		return false
	}
	return st.http == nil || st.http.backend == "http1"
}

// loopHTTP is a connection the loop serves in HTTP mode: what serve and httpLayer.serve keep
// for a goroutine-path HTTP connection, and the request under way. It is the connection
// manager's closer.
type loopHTTP struct {
	p  *Proxy
	ec *evloop.Conn
	hc httpConn
	fc fastConn // builds the requests; its conn is out, its writer answers into it
	// out collects what the fastWriter writes: the loop sends it.
	out    captureConn
	cancel context.CancelFunc
	// handed owns the sockets once the connection was handed off to the goroutine path:
	// Close closes them then (the client's and any backend's), not the loop's.
	handed atomic.Pointer[proxiedConn]
	killed atomic.Bool // Close was called
	// tls is a terminated connection's stream, once it moved to the loop after its handshake
	// (adoptTLS); tlsState its TLS state. nil for a plain-HTTP connection.
	tls      *tlsStream
	tlsState tls.ConnectionState
	// initialDeadline is serve's (proxiedConn's): the accept time and InitialDataTimeout. A
	// connection handed off on its first bytes gets it, not a new one, so that the wait on
	// the loop and the goroutine path's sniff and ClientHello share one InitialDataTimeout.
	initialDeadline time.Time

	// The forward under way (OnRequest to OnExchangeEnd).
	pr    *proxyReq
	lr    *loggedResponse // nil when no request log is on
	lrBuf loggedResponse
	lease balance.Lease
	held  bool
	tried [4]string
	nt    int
	req   []byte // the outgoing head (HTTPPlan.Out), reused
	body  []byte // its held body (HTTPPlan.Body): the loop's bytes of the request
	began bool   // the final head came (health counted)
	// closeAfter: the loop closes the connection after this response (the request or the
	// plan said so); the head says Connection: close.
	closeAfter bool
	// first: the connection is handed off on its first bytes, which were not a request.
	first bool
	// lastAddr is the last backend address planned, lastAP it parsed.
	lastAddr string
	lastAP   netip.AddrPort
}

// Close kills the connection from any goroutine (timeouts, Stop).
func (lh *loopHTTP) Close() error {
	lh.killed.Store(true) // a hand-off under way closes what it hands (handOff)
	if pc := lh.handed.Load(); pc != nil {
		return pc.Close()
	}
	lh.ec.Close()
	return nil
}

// backendAddr names the current request's target for the access log.
func (lh *loopHTTP) backendAddr() string {
	if lh.pr != nil {
		return lh.pr.addr
	}
	return ""
}

// engineOpenHTTP admits an accepted connection on an HTTP-mode port, as serve does for plain
// HTTP: the record and the open gauge, the checks deferred to its requests.
func (p *Proxy) engineOpenHTTP(port int, local net.Addr, c *evloop.Conn) evloop.Decision {
	client := c.Peer()
	lh := &loopHTTP{p: p, ec: c, initialDeadline: time.Now().Add(p.opts.InitialDataTimeout)}
	rec, err := p.conns.Open(client, port, lh)
	if err != nil {
		p.reject(refusal{client: client, port: port}, err)
		var w rawResponse
		writeHTTPReject(&w, err)
		c.WriteNow(w.bytes())
		return evloop.Decision{}
	}
	p.ops.opened(port)
	if p.baseCtx.Err() != nil { // see serve: accepted just before Stop
		p.conns.Close(rec)
		p.ops.connDone(rec, lh)
		return evloop.Decision{}
	}
	lh.hc = httpConn{rc: RouteContext{Port: port, ClientIP: client.Addr(), ClientAddr: client, LocalAddr: local,
		ConnectionID: rec.ID()}, admission: admissionDeferred, rec: rec}
	lh.init(nil)
	c.Data = lh
	return evloop.Decision{HTTP: true}
}

// init readies lh's request state once lh.hc is set: the context and fastConn its requests
// are built with, and st, a terminated connection's TLS state (nil: cleartext).
func (lh *loopHTTP) init(st *tls.ConnectionState) {
	ctx := context.WithValue(lh.p.baseCtx, httpConnKey{}, &lh.hc)
	ctx = context.WithValue(ctx, http.ServerContextKey, fastServerMarker)
	ctx, lh.cancel = context.WithCancel(ctx)
	lh.out.remote = net.TCPAddrFromAddrPort(lh.hc.rc.ClientAddr)
	lh.fc = fastConn{h: lh.p.http, hc: &lh.hc, conn: &lh.out, tls: st, remote: lh.out.remote.String(), ctx: ctx, cancel: lh.cancel}
	lh.fc.reqTmpl = (&http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody,
		RemoteAddr: lh.fc.remote, TLS: st}).WithContext(ctx)
}

// request decides one request (evloop's OnRequest): answered here, forwarded by the loop, or
// handed off.
func (lh *loopHTTP) request(req *h1parse.Request, raw []byte) evloop.HTTPPlan {
	h, fc := lh.p.http, &lh.fc
	if !fastEligibleHead(req) || req.Chunked || req.ContentLength > maxHeldBody {
		return evloop.HTTPPlan{HandOff: true}
	}
	lh.out.b = lh.out.b[:0]
	r, err := fc.request(req)
	if err != nil {
		fc.refuse(err)
		return evloop.HTTPPlan{Respond: lh.out.bytes(), Close: true}
	}
	fc.head, fc.req = r.Method == http.MethodHead, req
	w := fc.writer(req.Close)
	var rw http.ResponseWriter = w
	lh.lr = nil
	if h.px.detailed || h.px.ops.requests.Load() {
		lh.lrBuf = loggedResponse{ResponseWriter: w, start: time.Now()}
		lh.lr = &lh.lrBuf
		rw = lh.lr
	}
	var pr *proxyReq
	v := answered
	if !refuseFraming(rw, r) && !h.answerACMEChallenge(rw, r, &lh.hc) {
		eligible := loopHTTPRoute
		if lh.tls != nil {
			eligible = loopTLSRoute
		}
		pr, v = h.decide(rw, r, &lh.hc, eligible)
	}
	switch v {
	case ineligible: // nothing was done: the goroutine path serves it from its first byte
		w.release()
		fc.releaseRequest()
		return evloop.HTTPPlan{HandOff: true}
	case answered:
		keep := w.finish()
		w.release()
		if lh.lr != nil {
			h.requestDone(lh.lr, r, &lh.hc, pr)
		}
		fc.releaseRequest()
		return evloop.HTTPPlan{Respond: lh.out.bytes(), Close: !keep}
	}
	w.release()
	lh.pr = pr
	lh.nt, lh.began = 0, false
	lh.closeAfter = req.Close || fc.closing()
	lh.body = raw[req.HeadLen:]
	plan, ok := lh.plan()
	if !ok {
		answer := lh.answerFailed(plan.err)
		lh.done(0)
		return evloop.HTTPPlan{Respond: answer, Close: lh.closeAfter}
	}
	return plan.HTTPPlan
}

// panicked logs a panic out of a request's code on the loop, drops the request's state (its
// lease released) and returns the client's answer: a bare 500 (the connection then closes).
func (lh *loopHTTP) panicked(v any) []byte {
	lh.p.log.Error("panic serving a request", "id", lh.hc.rc.ConnectionID, "panic", v, "stack", string(debug.Stack()))
	lh.release()
	lh.pr, lh.lr, lh.fc.cur, lh.body = nil, nil, nil, nil
	return []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

// closed is evloop's OnClose: the end of a connection the loop served to the end (a
// handed-off one goes on under its record on the goroutine path).
func (lh *loopHTTP) closed(in, out int64, err error) {
	p := lh.p
	if errors.Is(err, evloop.ErrHandedOff) {
		return
	}
	lh.release()
	lh.cancel()
	if p.connLogOn() {
		p.logConn("connection closed", "id", lh.hc.rc.ConnectionID, "bytesIn", in, "bytesOut", out, "err", err, "engine", "eventloop")
	}
	p.conns.Close(lh.hc.rec)
	p.ops.connDone(lh.hc.rec, lh)
}

// malformed is evloop's OnMalformed. A connection's first bytes that are no request go to
// serve's own classification (serveOpened: a port's raw-TCP route may take them, a lookalike
// is closed) on the goroutine path, and so does a request whose body the client cut short
// (the fast path routes it, then answers 400); a later head the parser refused is answered
// as the fast path answers it (fastConn.refuse). A head that timed out ends without a word,
// as there.
func (lh *loopHTTP) malformed(err error, first bool, _ []byte) ([]byte, bool) {
	if errors.Is(err, evloop.ErrHTTPHeadTimeout) {
		return []byte{}, false
	}
	if first || errors.Is(err, evloop.ErrHTTPBodyCut) { // (a cut body: answered there as it would be)
		lh.first = first
		return nil, true
	}
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, evloop.ErrHTTPHeadTooLarge):
		status = http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, h1parse.ErrUnsupported):
		status = http.StatusNotImplemented
	}
	lh.p.logConn("request refused", "id", lh.hc.rc.ConnectionID, "err", err)
	var w rawResponse
	http.Error(&w, http.StatusText(status), status)
	return w.bytes(), false
}

// firstBytes is evloop's OnHTTPFirst, for a connection's first bytes that are no whole head
// yet: serve's classification of them (sniffStream's on a plain-HTTP port: strict). A TLS
// record, or a first line that is no request line, goes to serveOpened, which routes it (the
// port's TLS and raw TCP routes) or closes it (a lookalike); what may still become a request
// line waits for the head.
func (lh *loopHTTP) firstBytes(b []byte) bool {
	if v, decided, _ := classifyHTTP(b, true); b[0] == 0x16 || decided && v != verdictHTTP {
		lh.first = true
		return true
	}
	return false
}

// handOff serves a connection the loop handed off on the goroutine path, from the bytes the
// loop read, under the same record: from its first bytes (serveOpened), or from a request
// the loop does not carry, with the same httpConn (admission, route counts; nothing of that
// request was done).
func (lh *loopHTTP) handOff(fd int, data []byte) {
	p := lh.p
	lh.cancel()
	if lh.tls != nil {
		lh.handBackTLS(fd, data)
		return
	}
	conn, pc, ok := lh.takeBack(fd)
	if !ok {
		return
	}
	replay := &fastReplayConn{Conn: conn, pending: data}
	rec := lh.hc.rec
	p.handlers.Add(1)
	if lh.first {
		go func() {
			defer p.handlers.Done()
			peek := forwarding.NewPeekConn(replay)
			defer peek.Release()
			p.serveOpened(conn, peek, lh.hc.rc.Port, true, p.set.Load(), rec, pc, nil)
		}()
		return
	}
	meter := &meterConn{Conn: replay, rec: rec}
	meter.on.Store(true)
	lh.hc.meter, lh.hc.owner = meter, pc
	go func() {
		defer p.handlers.Done()
		defer p.finish(rec, pc)
		if p.baseCtx.Err() == nil {
			p.http.serve(meter, &lh.hc)
		}
	}()
}

// takeBack makes a handed-off socket a net.Conn for the goroutine path, owned by a new
// proxiedConn (the closer from now on: lh.handed); a connection killed meanwhile is closed.
// On failure the connection's record ends here.
func (lh *loopHTTP) takeBack(fd int) (net.Conn, *proxiedConn, bool) {
	p := lh.p
	f := os.NewFile(uintptr(fd), "handed-off")
	conn, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		p.log.Warn("handing a connection to the goroutine path failed", "port", lh.hc.rc.Port, "err", err)
		p.conns.Close(lh.hc.rec)
		p.ops.connDone(lh.hc.rec, lh)
		return nil, nil, false
	}
	pc := &proxiedConn{client: conn, initialDeadline: lh.initialDeadline}
	lh.handed.Store(pc)
	if lh.killed.Load() { // killed while the loop was handing it over
		_ = pc.Close()
	}
	return conn, pc, true
}

// captureConn is the net.Conn a loop connection's fastWriter writes to: the bytes collect
// for the loop to send.
type captureConn struct {
	b      []byte
	remote net.Addr
}

func (c *captureConn) bytes() []byte                    { return c.b }
func (c *captureConn) Write(b []byte) (int, error)      { c.b = append(c.b, b...); return len(b), nil }
func (c *captureConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return nil }
func (c *captureConn) RemoteAddr() net.Addr             { return c.remote }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
