//go:build linux

package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"github.com/gosmartproxy/smartproxy/internal/h1client"
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
	if !ok || !plan.plainHTTP || !p.fastPath() || !p.loopParts(set) {
		return false
	}
	_, ok = p.sec.(DefaultSecurityChecker)
	return ok
}

// fastPath reports that HTTP/1.1 is served on the fast path (not Options.DisableHTTPFastPath).
func (p *Proxy) fastPath() bool { return p.http.px.fastPath }

// loopHTTPRoute reports whether the loop can forward a request of route r by itself: a
// forward to cleartext HTTP/1.1 backends at IP-literal hosts, sending no PROXY header, whose
// checks do not block (a JWKS fetch, bcrypt: the loop would stall every connection it serves).
func loopHTTPRoute(r *Route) bool {
	st := r.state
	if r.Action.Type != ActionForward || st == nil || st.tls != nil || st.sendPP != 0 || len(st.targets) == 0 {
		return false
	}
	if st.sec.mayBlock() {
		return false
	}
	if st.http != nil && st.http.backend != "http1" {
		return false
	}
	for i := range st.targets {
		if !ipTarget(&st.targets[i]) {
			return false
		}
	}
	return true
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

	// The forward under way (OnRequest to OnExchangeEnd).
	pr    *proxyReq
	lr    *loggedResponse // nil when no request log is on
	lrBuf loggedResponse
	lease balance.Lease
	held  bool
	tried [4]string
	nt    int
	req   []byte // the outgoing request (HTTPPlan.Out), reused
	body  []byte // its held body, within req
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
	lh := &loopHTTP{p: p, ec: c}
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
	h := p.http
	ctx := context.WithValue(p.baseCtx, httpConnKey{}, &lh.hc)
	ctx = context.WithValue(ctx, http.ServerContextKey, fastServerMarker)
	ctx, lh.cancel = context.WithCancel(ctx)
	lh.out.remote = net.TCPAddrFromAddrPort(client)
	lh.fc = fastConn{h: h, hc: &lh.hc, conn: &lh.out, remote: lh.out.remote.String(), ctx: ctx, cancel: lh.cancel}
	lh.fc.reqTmpl = (&http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody,
		RemoteAddr: lh.fc.remote}).WithContext(ctx)
	c.Data = lh
	return evloop.Decision{HTTP: true}
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
		pr, v = h.decide(rw, r, &lh.hc, loopHTTPRoute)
	}
	switch v {
	case ineligible: // nothing was done: the goroutine path serves it from its first byte
		w.release()
		fc.cur = nil
		return evloop.HTTPPlan{HandOff: true}
	case answered:
		keep := w.finish()
		w.release()
		if lh.lr != nil {
			h.requestDone(lh.lr, r, &lh.hc, pr)
		}
		fc.cur = nil
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

// loopPlan is a forward's plan, or why there is none.
type loopPlan struct {
	evloop.HTTPPlan
	err error
}

// plan picks the next host of the request's target (as tryHosts does: the balancer, health,
// the hosts tried), takes its lease and builds the outgoing request for it.
func (lh *loopHTTP) plan() (loopPlan, bool) {
	h, pr, fc := lh.p.http, lh.pr, &lh.fc
	if lh.nt >= min(h.attempts(pr), len(lh.tried)) {
		return loopPlan{err: errNoMoreHosts}, false
	}
	addr, err := h.backendAddr(pr, lh.tried[:lh.nt])
	if err != nil {
		return loopPlan{err: err}, false
	}
	ap := lh.lastAP
	if addr != lh.lastAddr { // most requests of a connection go where the one before went
		if ap, err = netip.ParseAddrPort(addr); err != nil { // loopHTTPRoute let only IP-literal hosts through
			return loopPlan{err: fmt.Errorf("backend address %q: %w", addr, err)}, false
		}
		lh.lastAddr, lh.lastAP = addr, ap
	}
	lh.tried[lh.nt] = addr
	lh.nt++
	pr.addr = addr
	h.px.acquire(&lh.lease, addr)
	lh.held = true
	tmpl := h.expandTemplates(pr, true)
	// The body is copied behind the head: OnRequest's bytes are the loop's, valid during the
	// call only, and Out must stay as it is until the exchange ends.
	body := lh.body
	if lh.nt > 1 && len(body) > 0 {
		// A retry's: the body is within lh.req, behind the last head, which the new head
		// overwrites as it is written (a longer Host: the next address is longer).
		body = append([]byte(nil), body...)
	}
	lh.req = appendFastRequest(lh.req[:0], pr, fc.req, addr, tmpl, nil)
	lh.req = append(lh.req, body...)
	lh.body = lh.req[len(lh.req)-len(body):]
	lh.closeAfter = fc.req.Close || fc.closing()
	// pr.in has no Body on the loop (the body is held here): h1client.Replayable alone would
	// take a request with one for replayable, as the goroutine path's never is.
	replayable := len(body) == 0 && h1client.Replayable(pr.in)
	return loopPlan{HTTPPlan: evloop.HTTPPlan{Target: ap, Out: lh.req, Replayable: replayable,
		Head: fc.head, Close: lh.closeAfter}}, true
}

// errNoMoreHosts: every host the request may try was tried.
var errNoMoreHosts = errors.New("every backend host was tried")

// retry is evloop's OnHTTPRetry: tryHosts' rule (retryable) for a failed attempt, then the
// next host's plan.
func (lh *loopHTTP) retry(err error, connected bool) (evloop.HTTPPlan, bool) {
	h, pr := lh.p.http, lh.pr
	if pr == nil {
		return evloop.HTTPPlan{}, false
	}
	lh.release()
	err = loopBackendError(err, connected, pr.addr)
	var de *backendDialError
	dialFailed := errors.As(err, &de)
	if dialFailed {
		h.px.failed(pr.addr, de.err)
	}
	if lh.nt >= h.attempts(pr) || lh.p.baseCtx.Err() != nil {
		return evloop.HTTPPlan{}, false
	}
	if !dialFailed && (len(lh.body) > 0 || !retryable(pr.in, nil, false, err)) {
		return evloop.HTTPPlan{}, false
	}
	plan, ok := lh.plan()
	return plan.HTTPPlan, ok
}

// loopBackendError is a loop exchange's error as the goroutine path reports it: a failed
// connect a backendDialError, a timeout a net.Error that says so (proxyError's 504).
func loopBackendError(err error, connected bool, addr string) error {
	if errors.Is(err, evloop.ErrHTTPResponseTimeout) || errors.Is(err, evloop.ErrConnectTimeout) {
		err = &loopTimeout{err}
	}
	if !connected {
		err = &backendDialError{addr: addr, err: err}
	}
	return err
}

// loopTimeout is a loop timeout as a net.Error.
type loopTimeout struct{ error }

func (loopTimeout) Timeout() bool   { return true }
func (loopTimeout) Temporary() bool { return true }
func (t loopTimeout) Unwrap() error { return t.error }

// release ends the attempt's lease (least-connections).
func (lh *loopHTTP) release() {
	if lh.held {
		lh.held = false
		lh.lease.Release()
	}
}

// response is evloop's OnResponse: the client's head for a backend response head, as
// relayResponse and the fastWriter make it.
func (lh *loopHTTP) response(resp *h1parse.Response, dst []byte) []byte {
	h, pr := lh.p.http, lh.pr
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(resp.Status), 10)
	dst = append(append(append(dst, ' '), http.StatusText(resp.Status)...), "\r\n"...)
	if resp.Status < 200 {
		var connBuf [2]h1parse.Field
		conns := connectionFields(resp.Fields, connBuf[:0])
		for _, f := range resp.Fields {
			if dropField(f.Name, conns, responseReplaced) {
				continue
			}
			dst = append(append(append(append(dst, f.Name...), ": "...), f.Value...), "\r\n"...)
		}
		return append(dst, "\r\n"...)
	}
	if !lh.began {
		lh.began = true
		h.px.succeeded(pr.addr)
		if lh.lr != nil && lh.lr.status == 0 {
			lh.lr.status = resp.Status
		}
	}
	switch resp.Framing {
	case h1parse.Chunked, h1parse.UntilClose: // the loop passes a body until close on chunked
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
		if names := relayedTrailers(resp.Field("trailer")); names != "" && resp.Framing == h1parse.Chunked {
			dst = appendField(dst, "Trailer", names)
		}
	default:
		if resp.ContentLength >= 0 && resp.Status != http.StatusNoContent {
			dst = append(dst, "Content-Length: "...)
			dst = strconv.AppendInt(dst, resp.ContentLength, 10)
			dst = append(dst, "\r\n"...)
		}
	}
	at := len(dst)
	dst, hasDate := appendRelayedFields(dst, resp.Fields, h.expandTemplates(pr, false))
	if !hasDate {
		fields := append([]byte(nil), dst[at:]...) // Date goes first, as the fastWriter puts it
		dst = append(dst[:at], "Date: "...)
		dst = time.Now().UTC().AppendFormat(dst, http.TimeFormat)
		dst = append(append(dst, "\r\n"...), fields...)
	}
	if lh.closeAfter {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// exchangeEnd is evloop's OnExchangeEnd: the lease, the request log, and for a failed
// forward whose response had not started, the client's answer (proxyError's).
func (lh *loopHTTP) exchangeEnd(status int, body int64, err error) []byte {
	h, pr := lh.p.http, lh.pr
	if pr == nil {
		return nil
	}
	lh.release()
	var answer []byte
	switch {
	case err == nil:
	case errors.Is(err, evloop.ErrHTTPCut): // the connection closed (the client left, a kill): no answer
		h.px.logConn("request abandoned", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName, "target", pr.addr, "err", err)
	case status != 0:
		h.px.logConn("backend response broke off", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName,
			"target", pr.addr, "err", err)
	default: // passive health was told in retry, which the loop asks first
		answer = lh.answerFailed(loopBackendError(err, lh.ec.Connected(), pr.addr))
	}
	lh.done(body)
	return answer
}

// done ends the request under way: its request log line, and what it held.
func (lh *loopHTTP) done(body int64) {
	if lh.lr != nil {
		lh.lr.bytes += body
		lh.p.http.requestDone(lh.lr, lh.pr.in, &lh.hc, lh.pr)
	}
	lh.pr, lh.lr, lh.fc.cur, lh.body = nil, nil, nil, nil
}

// answerFailed is the client's answer to a forward that failed before its response
// started: proxyError's 502 or 504 (or a 404/503 for no host), with Connection: close.
func (lh *loopHTTP) answerFailed(err error) []byte {
	h, pr := lh.p.http, lh.pr
	lh.out.b = lh.out.b[:0]
	w := lh.fc.writer(lh.closeAfter)
	var rw http.ResponseWriter = w
	if lh.lr != nil {
		lh.lr.ResponseWriter = w
		rw = lh.lr
	}
	r := pr.in.WithContext(context.WithValue(pr.in.Context(), proxyReqKey{}, pr))
	h.proxyError(rw, r, err)
	w.finish()
	w.release()
	return lh.out.bytes()
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
	f := os.NewFile(uintptr(fd), "handed-off")
	conn, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		p.log.Warn("handing a connection to the goroutine path failed", "port", lh.hc.rc.Port, "err", err)
		p.conns.Close(lh.hc.rec)
		p.ops.connDone(lh.hc.rec, lh)
		return
	}
	pc := &proxiedConn{client: conn, initialDeadline: time.Now().Add(p.opts.InitialDataTimeout)}
	lh.handed.Store(pc)
	if lh.killed.Load() { // killed while the loop was handing it over
		_ = pc.Close()
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
