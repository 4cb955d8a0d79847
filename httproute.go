package smartproxy

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/gobwas/glob"
	"github.com/gosmartproxy/smartproxy/internal/textmatch"
	"golang.org/x/net/http/httpguts"
)

// httpRoute is the compiled HTTP part of a route. It is nil for routes
// without any HTTP field, which keeps the TCP paths free of it.
type httpRoute struct {
	// Request criteria (match.path, match.headers, match.method).
	path     *textmatch.Path
	headers  []headerMatcher
	methods  []string
	criteria bool // any request criterion is set
	pathSpec int  // specificity of path, 0 without one

	// httpOnly routes cannot take a raw TCP stream: they have request
	// criteria or HTTP action features (or HTTP checks), and a terminated
	// stream that is not HTTP is closed instead of forwarded.
	httpOnly bool

	reqHeaders  []headerTemplate
	respHeaders []headerTemplate
	rewrite     *urlRewrite
	redirect    *Redirect        // status resolved
	keepHost    bool             // options.rewriteHostHeader: false
	backend     string           // options.backendProtocol: "http1", "h2c" or "h2"
	noWebSocket bool             // websocket.enabled: false
	pathReject  bool             // options.pathNormalization: "reject"
	targets     []*targetMatcher // parallel to routeState.targets; nil entries match all
}

// headerMatcher is one compiled entry of match.headers.
type headerMatcher struct {
	name  string // canonical header key
	exact string
	glob  *glob.Pattern // nil: compare with exact
}

// headerTemplate is one entry of action.headers.request/response.
type headerTemplate struct {
	name string // canonical header key
	tmpl string // "" removes the header
}

// urlRewrite is a compiled action.rewrite. The target's $N references
// are turned into {__rewrite.N} placeholders, so one textmatch.Expand pass
// fills templates and captures without re-expanding either's values.
type urlRewrite struct {
	re     *regexp.Regexp
	target string
}

// targetMatcher is a compiled targets[].match.
type targetMatcher struct {
	ports   []int
	path    *textmatch.Path
	headers []headerMatcher
	methods []string
}

// knownMethods are the request methods match.method accepts: RFC 9110
// and PATCH, plus the WebDAV methods.
var knownMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
}

// compileHTTP validates the HTTP parts of a route and returns them
// compiled; nil when the route has none.
func (v *routeValidator) compileHTTP(r *Route, st *routeState) *httpRoute {
	m, a := &r.Match, &r.Action
	h := &httpRoute{backend: "http1"}
	var err error
	if m.Path != "" {
		if h.path, err = textmatch.CompilePath(m.Path); err != nil {
			v.fail("match.path", err)
		} else {
			h.pathSpec = 1 + h.path.Specificity()
		}
	}
	h.headers = v.compileHeaderMatch("match.headers", m.Headers)
	h.methods = v.compileMethods("match.method", m.Method)
	h.criteria = h.path != nil || len(h.headers) > 0 || len(h.methods) > 0
	features := v.compileActionHTTP(a, h)
	for i := range st.targets {
		if t := st.targets[i].Match; t != nil {
			if h.targets == nil {
				h.targets = make([]*targetMatcher, len(st.targets))
			}
			h.targets[i] = v.compileTargetMatch(fmt.Sprintf("action.targets[%d].match", i), t)
			features = true
		}
	}
	if !h.criteria && !features {
		return nil
	}
	h.httpOnly = true
	switch {
	case a.TLS != nil && a.TLS.Mode == TLSPassthrough:
		v.fail("action.tls.mode", errors.New("HTTP matching and HTTP actions need a terminating TLS mode (or no TLS), not passthrough"))
	case a.Type == ActionSocketHandler && features:
		v.fail("action", errors.New("HTTP actions (options, headers, rewrite, redirect, websocket, target match) need a forward action"))
	}
	return h
}

// compileActionHTTP compiles the action's HTTP features into h and
// reports whether there are any.
func (v *routeValidator) compileActionHTTP(a *RouteAction, h *httpRoute) bool {
	features := false
	if o := a.Options; o != nil {
		features = true
		h.keepHost = o.RewriteHostHeader != nil && !*o.RewriteHostHeader
		switch o.BackendProtocol {
		case "", BackendHTTP1:
		case BackendH2C:
			if a.TLS != nil && a.TLS.Mode == TLSTerminateAndReencrypt {
				v.fail("action.options.backendProtocol", errors.New(`"h2c" is cleartext; with terminate-and-reencrypt use "h2"`))
			}
			h.backend = string(o.BackendProtocol)
		case BackendH2:
			if a.TLS == nil || a.TLS.Mode != TLSTerminateAndReencrypt {
				v.fail("action.options.backendProtocol", errors.New(`"h2" needs tls.mode "terminate-and-reencrypt" (use "h2c" for cleartext HTTP/2)`))
			}
			h.backend = string(o.BackendProtocol)
		default:
			v.fail("action.options.backendProtocol", fmt.Errorf("unknown protocol %q (want http1, h2c or h2)", o.BackendProtocol))
		}
		if err := checkPathOption(o.PathNormalization); err != nil {
			v.fail("action.options.pathNormalization", err)
		}
		h.pathReject = o.PathNormalization == PathReject
	}
	if hd := a.Headers; hd != nil {
		features = true
		h.reqHeaders = v.compileHeaderTemplates("action.headers.request", hd.Request)
		h.respHeaders = v.compileHeaderTemplates("action.headers.response", hd.Response)
	}
	if rw := a.Rewrite; rw != nil {
		features = true
		h.rewrite = v.compileRewrite(rw)
	}
	if rd := a.Redirect; rd != nil {
		features = true
		red := *rd
		red.Status = cmp.Or(red.Status, http.StatusMovedPermanently)
		switch red.Status {
		case 301, 302, 303, 307, 308:
		default:
			v.fail("action.redirect.status", fmt.Errorf("status %d is not a redirect (want 301, 302, 303, 307 or 308)", rd.Status))
		}
		if strings.TrimSpace(red.To) == "" {
			v.fail("action.redirect.to", errors.New("is required"))
		}
		h.redirect = &red
	}
	if ws := a.WebSocket; ws != nil {
		features = true
		h.noWebSocket = ws.Enabled != nil && !*ws.Enabled
		if ws.PingInterval < 0 || ws.PingTimeout < 0 {
			v.fail("action.websocket", errors.New("pingInterval and pingTimeout must not be negative"))
		}
	}
	return features
}

func (v *routeValidator) compileHeaderMatch(field string, hm map[string]string) []headerMatcher {
	var out []headerMatcher
	for _, name := range sortedKeys(hm) {
		val := hm[name]
		f := field + "." + name
		if !httpguts.ValidHeaderFieldName(name) {
			v.fail(f, fmt.Errorf("invalid header name %q", name))
			continue
		}
		g, err := compileGlob(val)
		if err != nil {
			v.fail(f, fmt.Errorf("invalid pattern %q: %w", val, err))
			continue
		}
		out = append(out, headerMatcher{name: http.CanonicalHeaderKey(name), exact: val, glob: g})
	}
	return out
}

func (v *routeValidator) compileMethods(field string, methods []string) []string {
	var out []string
	for i, m := range methods {
		up := strings.ToUpper(strings.TrimSpace(m))
		if !slices.Contains(knownMethods, up) {
			v.fail(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("unknown HTTP method %q", m))
			continue
		}
		out = append(out, up)
	}
	return out
}

func (v *routeValidator) compileHeaderTemplates(field string, hm map[string]string) []headerTemplate {
	var out []headerTemplate
	for _, name := range sortedKeys(hm) {
		if !httpguts.ValidHeaderFieldName(name) {
			v.fail(field+"."+name, fmt.Errorf("invalid header name %q", name))
			continue
		}
		if strings.ContainsAny(hm[name], "\r\n") {
			v.fail(field+"."+name, errors.New("value must not contain line breaks"))
			continue
		}
		out = append(out, headerTemplate{name: http.CanonicalHeaderKey(name), tmpl: hm[name]})
	}
	return out
}

func (v *routeValidator) compileRewrite(rw *URLRewrite) *urlRewrite {
	re, err := regexp.Compile(rw.Pattern)
	if err != nil {
		v.fail("action.rewrite.pattern", err)
		return nil
	}
	if rw.Pattern == "" {
		v.fail("action.rewrite.pattern", errors.New("is required"))
	}
	if rw.Target == "" {
		v.fail("action.rewrite.target", errors.New("is required"))
	}
	return &urlRewrite{re: re, target: captureRefs.ReplaceAllString(rw.Target, "{__rewrite.$1$2}")}
}

// captureRefs finds $N and ${N} in a rewrite target.
var captureRefs = regexp.MustCompile(`\$(?:(\d+)|\{(\d+)\})`)

func (v *routeValidator) compileTargetMatch(field string, t *TargetMatch) *targetMatcher {
	tm := &targetMatcher{ports: t.Ports}
	for i, p := range t.Ports {
		if p < 1 || p > 65535 {
			v.fail(fmt.Sprintf("%s.ports[%d]", field, i), fmt.Errorf("port %d out of range 1-65535", p))
		}
	}
	if t.Path != "" {
		var err error
		if tm.path, err = textmatch.CompilePath(t.Path); err != nil {
			v.fail(field+".path", err)
		}
	}
	tm.headers = v.compileHeaderMatch(field+".headers", t.Headers)
	tm.methods = v.compileMethods(field+".method", t.Method)
	return tm
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// httpAccepts applies the HTTP rules of matching. For a connection
// (q.Request nil), a route that only makes sense for HTTP matches only a
// TLS connection it terminates: the request criteria are checked per
// request once the stream turns out to be HTTP. For a request, only
// routes valid for the connection kind are candidates, and the request
// criteria must hold.
func httpAccepts(r *Route, q *MatchQuery) bool {
	st := r.state
	h := st.http
	if q.Request == nil {
		return h == nil || !h.httpOnly || st.tls != nil && q.TLSVersion != 0
	}
	if q.Terminated != (st.tls != nil) || !q.Terminated && r.Action.TLS != nil {
		return false
	}
	return h == nil || !h.criteria || h.matchRequest(q.Request)
}

// matchRequest checks match.path, match.headers and match.method.
func (h *httpRoute) matchRequest(req *http.Request) bool {
	return requestMatches(req, h.path, h.headers, h.methods)
}

// accepts reports whether the target sub-match takes req on port.
func (tm *targetMatcher) accepts(req *http.Request, port int) bool {
	if tm == nil {
		return true
	}
	if len(tm.ports) > 0 && !slices.Contains(tm.ports, port) {
		return false
	}
	return requestMatches(req, tm.path, tm.headers, tm.methods)
}

func requestMatches(req *http.Request, pp *textmatch.Path, headers []headerMatcher, methods []string) bool {
	if len(methods) > 0 && !slices.Contains(methods, req.Method) {
		return false
	}
	if pp != nil {
		if !pp.Match(cleanPath(req.URL.Path)) {
			return false
		}
	}
	for i := range headers {
		if !headers[i].matches(req.Header[headers[i].name]) {
			return false
		}
	}
	return true
}

// matches reports whether any of the header's values fits; a missing
// header never does, so "*" means "present".
func (m *headerMatcher) matches(values []string) bool {
	for _, v := range values {
		if m.glob != nil && m.glob.Match(v) || m.glob == nil && v == m.exact {
			return true
		}
	}
	return false
}

// cleanPath resolves "." and ".." segments and repeated slashes before
// path matching, keeping a trailing slash, so that "/public/../admin"
// is matched as the "/admin" a backend will serve: route-based access
// rules cannot be walked around.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "/.") && !strings.Contains(p, "//") {
		return p // the common case: nothing to clean, no allocation
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}
