package smartproxy

import (
	"net/http"
	"time"
)

// loggedResponse records what a request was answered, for the request
// line that enableDetailedLogging adds, the request metrics and the
// access log; it is only put in front of the response writer when one of
// them is on, so the hot path pays nothing for it otherwise. Unwrap lets
// http.ResponseController (flushes, hijacks for upgrades and handovers)
// reach the server's writer.
type loggedResponse struct {
	http.ResponseWriter
	start  time.Time
	status int
	bytes  int64
}

func (l *loggedResponse) WriteHeader(code int) {
	if l.status == 0 && code >= 200 { // 1xx are interim, not the answer
		l.status = code
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *loggedResponse) Write(b []byte) (int, error) {
	if l.status == 0 {
		l.status = http.StatusOK
	}
	n, err := l.ResponseWriter.Write(b)
	l.bytes += int64(n)
	return n, err
}

// Unwrap returns the server's writer.
func (l *loggedResponse) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// requestDone accounts a finished request: the detailed-logging line
// (logRequest), the per-route request metrics and the access log line.
// pr is nil when no route took the request.
func (h *httpLayer) requestDone(l *loggedResponse, r *http.Request, hc *httpConn, pr *proxyReq) {
	route, target := "", ""
	if pr != nil {
		route, target = pr.route.Name, pr.addr
	}
	status := l.status
	if status == 0 && hc.hijacked.Load() {
		status = http.StatusSwitchingProtocols // an upgrade or a handover
	}
	took := time.Since(l.start)
	if h.px.detailed {
		h.px.logConn("request", "id", hc.rc.ConnectionID, "client", hc.rc.ClientAddr, "method", r.Method,
			"host", r.Host, "path", r.URL.EscapedPath(), "proto", r.Proto, "route", route, "status", status,
			"bytesOut", l.bytes, "duration", took)
	}
	ops := h.px.ops
	if !ops.requests.Load() {
		return
	}
	ops.request(route, status, took)
	if ops.access != nil {
		ops.access.enqueue(accessEntry{request: true, id: hc.rc.ConnectionID, client: hc.rc.ClientAddr,
			route: route, target: target, method: r.Method, host: r.Host, path: r.URL.EscapedPath(),
			proto: r.Proto, status: status, bytesOut: uint64(max(l.bytes, 0)), took: took})
	}
}
