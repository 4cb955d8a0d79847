package smartproxy

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/gosmartproxy/smartproxy/internal/textmatch"
)

// Templates of the HTTP layer (action.headers, rewrite, redirect), expanded
// by textmatch.Expand:
//
//	{domain}        the request's host (port stripped, lower-cased)
//	{path}          the request path, escaped, without the query (templatePath)
//	{query}         the raw query, without '?'
//	{clientIp}      the client address; {serverIp} the proxy's address
//	{port}          the proxy port; {routeName}; {connectionId}
//	{timestamp}     Unix time in milliseconds
//	{headers.name}  a request header (lower-case name), "" when absent
//
// Unknown names stay as written. {path} and {query} mean the same in
// HTTPRedirectHandler's template, and both redirects keep the request's
// query (redirectLocation), so "https://{domain}{path}" redirects
// "/a?b=c" to "https://host/a?b=c" in either.

// templatePath is {path} in every template: the request path as sent
// (escaped: a decoded %2F could turn a redirect into "//host"), without
// the query, which is {query}; "/" for a request without one (an
// absolute-form "http://host"). These are TS's meanings of both names.
func templatePath(u *url.URL) string {
	if p := u.EscapedPath(); p != "" {
		return p
	}
	return "/"
}

// redirectLocation expands a redirect's Location template. The request's
// query is appended unless the template places it ({query}) or the
// expansion has a query of its own.
func redirectLocation(tmpl, rawQuery string, lookup func(string) (string, bool)) string {
	loc := textmatch.Expand(tmpl, lookup)
	if rawQuery != "" && !strings.Contains(tmpl, "{query}") && !strings.Contains(loc, "?") {
		loc += "?" + rawQuery
	}
	return loc
}

// lookup resolves a template variable for pr.
func (pr *proxyReq) lookup(name string) (string, bool) {
	rc := &pr.rc
	switch name {
	case "domain":
		return rc.Domain, true
	case "path":
		return templatePath(pr.in.URL), true
	case "query":
		return pr.in.URL.RawQuery, true
	case "clientIp":
		if rc.ClientIP.IsValid() {
			return rc.ClientIP.String(), true
		}
		return "", true
	case "serverIp":
		if a, ok := rc.LocalAddr.(*net.TCPAddr); ok {
			return a.AddrPort().Addr().Unmap().String(), true
		}
		return "", true
	case "port":
		return strconv.Itoa(rc.Port), true
	case "routeName":
		return rc.RouteName, true
	case "connectionId":
		return strconv.FormatUint(rc.ConnectionID, 10), true
	case "timestamp":
		return strconv.FormatInt(unixMilli(), 10), true
	}
	if hn, ok := strings.CutPrefix(name, "headers."); ok && hn != "" {
		return pr.in.Header.Get(hn), true
	}
	return "", false
}

// applyHeaders sets each header to its expanded template; an empty result
// removes the header.
func (pr *proxyReq) applyHeaders(hdr http.Header, list []headerTemplate) {
	for _, ht := range list {
		v := textmatch.Expand(ht.tmpl, pr.lookup)
		if v == "" || strings.ContainsAny(v, "\r\n") {
			hdr.Del(ht.name)
			continue
		}
		hdr.Set(ht.name, v)
	}
}

// setForwarded sets X-Forwarded-For, -Host, -Proto (as
// httputil.ProxyRequest.SetXForwarded does), X-Real-IP (as nginx setups
// commonly do; a client's own would otherwise reach the backend, which
// may trust it) and the RFC 7239 Forwarded header on out, for a request
// from in. Called from Rewrite, after the reverse proxy removed the
// X-Forwarded ones the client sent, so there is no prior X-Forwarded-For
// to append to. The values share one allocation (Header.Set would make
// one slice each); X-Real-IP shares X-Forwarded-For's, whose capacity of
// one keeps an Add to either from touching the other.
func setForwarded(out, in *http.Request, pr *proxyReq) {
	hdr := out.Header
	v := new([4]string)
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		v[0] = ip
		hdr["X-Forwarded-For"] = v[0:1:1]
		hdr["X-Real-Ip"] = v[0:1:1]
	} else {
		delete(hdr, "X-Forwarded-For")
		delete(hdr, "X-Real-Ip")
	}
	v[1] = in.Host
	hdr["X-Forwarded-Host"] = v[1:2:2]
	v[2] = "http"
	if in.TLS != nil {
		v[2] = "https"
	}
	hdr["X-Forwarded-Proto"] = v[2:3:3]
	v[3] = forwardedValue(pr)
	hdr["Forwarded"] = v[3:4:4]
}

// forwardedValue is the RFC 7239 Forwarded header for this hop, built in
// a stack buffer: one allocation, the string, unless the Host is long.
func forwardedValue(pr *proxyReq) string {
	var buf [128]byte
	return string(appendForwarded(buf[:0], pr.rc.ClientIP, pr.in.Host, pr.in.TLS != nil))
}

// appendForwarded appends `for=ip;host="host";proto=http(s)`, leaving
// out for= when ip is invalid and host= when host is empty. IPv6
// addresses are bracketed and quoted, as RFC 7239 requires.
func appendForwarded(b []byte, ip netip.Addr, host string, https bool) []byte {
	if ip.IsValid() {
		b = append(b, "for="...)
		if ip.Is6() {
			b = append(b, `"[`...)
			b = ip.AppendTo(b)
			b = append(b, `]"`...)
		} else {
			b = ip.AppendTo(b)
		}
		b = append(b, ';')
	}
	if host != "" {
		b = append(b, "host="...)
		b = appendQuotedHost(b, host)
		b = append(b, ';')
	}
	if https {
		return append(b, "proto=https"...)
	}
	return append(b, "proto=http"...)
}

// appendQuotedHost appends host as strconv.AppendQuote quotes it; a host of printable ASCII
// with no quote or backslash (every valid one) is copied between quotes, without
// AppendQuote's rune-by-rune pass.
func appendQuotedHost(b []byte, host string) []byte {
	for i := 0; i < len(host); i++ {
		if c := host[i]; c < ' ' || c > '~' || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, host)
		}
	}
	b = append(b, '"')
	b = append(b, host...)
	return append(b, '"')
}

// rewriteURL applies action.rewrite: the pattern is matched against the
// escaped path with its query ("/a/b?x=1"); the first match is replaced
// by the expanded target. A result that is not a valid request target
// leaves the URL as it was. The result is held to the rules of request
// paths (httppath.go), since captures and templates ({headers.x}) carry
// what the client sent: without a canonical form it is refused, and a
// non-canonical one is normalised, or refused on a "reject" route. The
// outgoing request takes pr.rewritten in rewriteRequest.
func (pr *proxyReq) rewriteURL(rw *urlRewrite, reject bool) error {
	in := pr.in.URL.EscapedPath()
	if pr.in.URL.RawQuery != "" {
		in += "?" + pr.in.URL.RawQuery
	}
	m := rw.re.FindStringSubmatchIndex(in)
	if m == nil {
		return nil
	}
	repl := textmatch.Expand(rw.target, func(name string) (string, bool) {
		if n, ok := strings.CutPrefix(name, "__rewrite."); ok {
			i, err := strconv.Atoi(n)
			if err != nil || 2*i+1 >= len(m) || m[2*i] < 0 {
				return "", err == nil
			}
			return in[m[2*i]:m[2*i+1]], true
		}
		return pr.lookup(name)
	})
	u, err := url.ParseRequestURI(in[:m[0]] + repl + in[m[1]:])
	if err != nil {
		return nil
	}
	// A template may put what a client sent (a header, say) into the query, which
	// ParseRequestURI keeps as it is: a space there would end the request target on the
	// wire ("GET /r?q=1 HTTP/1.0 HTTP/1.1"), so such bytes go out percent-encoded.
	u.RawQuery = escapeQueryBytes(u.RawQuery)
	switch canon, v := canonicalPath(u.EscapedPath()); {
	case v == pathAmbiguous:
		return fmt.Errorf("rewritten path: %w", errAmbiguousPath)
	case v == pathNormalizable && reject:
		return fmt.Errorf("rewritten path: %w", errNonCanonicalPath)
	case v == pathNormalizable:
		if u.Path, err = url.PathUnescape(canon); err != nil {
			return fmt.Errorf("rewritten path: %w", err)
		}
		u.RawPath = canon
	}
	pr.rewritten = u
	return nil
}

// redirect answers with the route's redirect (see redirectLocation).
func (h *httpLayer) redirect(w http.ResponseWriter, pr *proxyReq) {
	rd := pr.route.state.http.redirect
	loc := redirectLocation(rd.To, pr.in.URL.RawQuery, pr.lookup)
	w.Header().Set("Location", loc)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(rd.Status)
	if pr.in.Method != http.MethodHead {
		_, _ = w.Write([]byte(strconv.Itoa(rd.Status) + " " + http.StatusText(rd.Status) + "\n"))
	}
}

// escapeQueryBytes percent-encodes the bytes a request target may not hold
// raw (controls, space, DEL, non-ASCII, and '#', which would start a
// fragment); q is returned as it is when it has none.
func escapeQueryBytes(q string) string {
	bad := func(c byte) bool { return c <= ' ' || c >= 0x7f || c == '#' }
	i := 0
	for i < len(q) && !bad(q[i]) {
		i++
	}
	if i == len(q) {
		return q
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(q)+8)
	b = append(b, q[:i]...)
	for ; i < len(q); i++ {
		if c := q[i]; bad(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}
