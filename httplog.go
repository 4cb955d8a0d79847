package smartproxy

import (
	"net/http"
	"time"
)

// loggedResponse records what a request was answered, for the request
// line that enableDetailedLogging adds; it is only put in front of the
// response writer then, so the hot path pays nothing for it. Unwrap lets
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

// logRequest writes one line per request on the HTTP layer: who asked
// for what, which route took it, how it was answered and how long it
// took. pr is nil when no route took the request.
func (h *httpLayer) logRequest(l *loggedResponse, r *http.Request, hc *httpConn, pr *proxyReq) {
	route := ""
	if pr != nil {
		route = pr.route.Name
	}
	status := l.status
	if status == 0 && hc.hijacked.Load() {
		status = http.StatusSwitchingProtocols // an upgrade or a handover
	}
	h.px.logConn("request", "id", hc.rc.ConnectionID, "client", hc.rc.ClientAddr, "method", r.Method,
		"host", r.Host, "path", r.URL.EscapedPath(), "proto", r.Proto, "route", route, "status", status,
		"bytesOut", l.bytes, "duration", time.Since(l.start))
}
