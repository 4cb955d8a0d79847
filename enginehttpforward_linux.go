//go:build linux

package smartproxy

// The forward side of plain HTTP on the event loops (enginehttp_linux.go): the plan of a
// forwarded request (the balancer's host, its lease, the outgoing head), the retry rule, the
// client's head for the backend's response, and the end of the exchange.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"github.com/gosmartproxy/smartproxy/internal/h1client"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

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
	// The held body goes as it came: the loop sends it from its own buffer after the head
	// (HTTPPlan.Body), on every attempt (those bytes stay as they are until the exchange
	// ends), so the head is all that is written here.
	lh.req = appendFastRequest(lh.req[:0], pr, fc.req, addr, tmpl, nil, &fc.fields)
	lh.closeAfter = fc.req.Close || fc.closing()
	// pr.in has no Body on the loop (the body is held here): h1client.Replayable alone would
	// take a request with one for replayable, as the goroutine path's never is.
	replayable := len(lh.body) == 0 && h1client.Replayable(pr.in)
	return loopPlan{HTTPPlan: evloop.HTTPPlan{Target: ap, Out: lh.req, Body: lh.body, Replayable: replayable,
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
	if resp.Status == http.StatusOK {
		dst = append(dst, "HTTP/1.1 200 OK\r\n"...) // the usual one, without formatting it
	} else {
		dst = append(dst, "HTTP/1.1 "...)
		dst = strconv.AppendInt(dst, int64(resp.Status), 10)
		dst = append(append(append(dst, ' '), http.StatusText(resp.Status)...), "\r\n"...)
	}
	if resp.Status < 200 { // relayed as the fastWriter relays one (Interim): no templates
		dst, _ = appendRelayedFields(dst, resp.Fields, nil)
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
	dst, hasDate := appendRelayedFields(dst, resp.Fields, h.expandTemplates(pr, false))
	if !hasDate { // after the relayed fields (their order is theirs): no copy of them
		dst = append(dst, "Date: "...)
		dst = time.Now().UTC().AppendFormat(dst, http.TimeFormat)
		dst = append(dst, "\r\n"...)
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
	lh.fc.releaseRequest() // nothing the loop ran keeps a part of it (fastReq)
	lh.pr, lh.lr, lh.body = nil, nil, nil
	if cap(lh.req) > loopKeptBuf {
		lh.req = nil // a long head grew it: an idle connection keeps no more than a head's room
	}
}

// loopKeptBuf is the largest outgoing-head buffer a loop connection keeps between requests.
const loopKeptBuf = 4 << 10

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
