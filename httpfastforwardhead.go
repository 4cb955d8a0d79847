package smartproxy

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"github.com/gosmartproxy/smartproxy/internal/textmatch"
	"golang.org/x/net/http/httpguts"
)

// The fast forward's request head (httpfastforward.go): what
// rewriteRequest and http.Request.Write would send, serialised once from
// the parsed fields, and the header templates and hop-by-hop rules the
// response side (httpfastforwardresp.go) shares.

// fwdTemplate is an expanded header template: value "" deletes.
type fwdTemplate struct{ name, value string }

// expandTemplates expands the route's request (or response) header
// templates once, as applyHeaders does.
func (h *httpLayer) expandTemplates(pr *proxyReq, request bool) []fwdTemplate {
	hr := pr.route.state.http
	if hr == nil {
		return nil
	}
	list := hr.respHeaders
	if request {
		list = hr.reqHeaders
	}
	if len(list) == 0 {
		return nil
	}
	out := make([]fwdTemplate, len(list))
	for i, ht := range list {
		v := textmatch.Expand(ht.tmpl, pr.lookup)
		if !httpguts.ValidHeaderFieldValue(v) {
			v = "" // applyHeaders deletes a value with a line break; appendField drops other controls
		}
		out[i] = fwdTemplate{name: ht.name, value: v}
	}
	// Set replaces: the last template of a name wins, as with hdr.Set.
	return out
}

// templated reports whether a template names name.
func templated(tmpl []fwdTemplate, name []byte) bool {
	for i := range tmpl {
		if h1parse.EqualFold(name, tmpl[i].name) {
			return true
		}
	}
	return false
}

// appendTemplates appends the templates' fields (the last of a name
// wins; empty ones delete), except names framing or Host: those the
// writer of the head sets itself, as http.Request.Write ignores them.
func appendTemplates(b []byte, tmpl []fwdTemplate, skip func(string) bool) []byte {
	for i, t := range tmpl {
		if t.value == "" || skip(t.name) {
			continue
		}
		last := true
		for _, u := range tmpl[i+1:] {
			if u.name == t.name {
				last = false
			}
		}
		if last {
			b = appendField(b, t.name, t.value)
		}
	}
	return b
}

// hopByHop are the fields a proxy does not forward (RFC 9110 7.6.1, and
// ReverseProxy's list), lower-case.
var hopByHop = [...]string{"connection", "proxy-connection", "keep-alive", "proxy-authenticate",
	"proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}

// connectionFields returns the Connection fields of fields, appended to
// buf (a caller's small array: one per head, so that dropField does not
// rescan every field for each one).
func connectionFields(fields []h1parse.Field, buf []h1parse.Field) []h1parse.Field {
	for _, f := range fields {
		if h1parse.EqualFold(f.Name, "connection") {
			buf = append(buf, f)
		}
	}
	return buf
}

// dropField reports a field the forward does not copy: hop-by-hop, named
// by one of conns (the head's Connection fields, connectionFields), or
// in extra. The hop-by-hop names and the sets' replaced names are found
// by the name's length first (fieldSet.has): this runs for every field of
// every request and response, and most names have a length none of them
// has, or differ from the one or two that do in their first byte.
func dropField(name []byte, conns []h1parse.Field, extra fieldSet) bool {
	if extra.has(name) {
		return true
	}
	for i := range conns {
		v := conns[i].Value
		for len(v) > 0 {
			tok := v
			if j := bytes.IndexByte(v, ','); j >= 0 {
				tok, v = v[:j], v[j+1:]
			} else {
				v = nil
			}
			if tok = bytes.Trim(tok, " \t"); len(tok) > 0 && h1parse.EqualFold(tok, name) {
				return true
			}
		}
	}
	return false
}

// fieldSet is which names, besides the hop-by-hop ones, dropField drops.
type fieldSet uint8

const (
	requestReplaced  fieldSet = iota // the request fields the forward sets itself
	responseReplaced                 // the response fields the fastWriter frames itself
)

// has reports whether name (any letter case) is hop-by-hop (the names of
// hopByHop) or in the set.
func (s fieldSet) has(name []byte) bool {
	req := s == requestReplaced
	switch len(name) {
	case 2:
		return h1parse.EqualFold(name, "te")
	case 4:
		return req && h1parse.EqualFold(name, "host")
	case 7:
		return h1parse.EqualFold(name, "trailer") || h1parse.EqualFold(name, "upgrade")
	case 9:
		return req && (h1parse.EqualFold(name, "x-real-ip") || h1parse.EqualFold(name, "forwarded"))
	case 10:
		return h1parse.EqualFold(name, "connection") || h1parse.EqualFold(name, "keep-alive")
	case 14:
		return h1parse.EqualFold(name, "content-length") // both sets
	case 15:
		return req && h1parse.EqualFold(name, "x-forwarded-for")
	case 16:
		return h1parse.EqualFold(name, "proxy-connection") || req && h1parse.EqualFold(name, "x-forwarded-host")
	case 17:
		return h1parse.EqualFold(name, "transfer-encoding") || req && h1parse.EqualFold(name, "x-forwarded-proto")
	case 18:
		return h1parse.EqualFold(name, "proxy-authenticate")
	case 19:
		return h1parse.EqualFold(name, "proxy-authorization")
	}
	return false
}

// appendFastRequest serialises the outgoing head of pr to addr: what
// rewriteRequest and http.Request.Write would send, fields in the
// client's order; up is the request's chunked upload, nil for none.
func appendFastRequest(b []byte, pr *proxyReq, req *h1parse.Request, addr string, tmpl []fwdTemplate, up *chunkedUpload, ff *fwdFields) []byte {
	r := pr.in
	ff.update(r, pr.rc.ClientIP)
	b = append(b, r.Method...)
	b = append(b, ' ')
	// rewriteRequest takes the path and query of pr.rewritten, and
	// keeps the rest of the client's URL (ForceQuery included).
	// ReverseProxy drops the query parameters it cannot parse (a bad
	// escape, a ';') from the client's query before Rewrite; the same here.
	u, q := r.URL, cleanQuery(r.URL.RawQuery)
	if pr.rewritten != nil {
		u, q = pr.rewritten, pr.rewritten.RawQuery
	}
	b = appendRequestURI(b, u.EscapedPath(), q, r.URL.ForceQuery)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	host := addr
	if hr := pr.route.state.http; hr != nil && hr.keepHost {
		host = r.Host
	}
	b = append(b, host...)
	b = append(b, "\r\n"...)
	trailers := false
	var connBuf [2]h1parse.Field
	conns := connectionFields(req.Fields, connBuf[:0])
	for _, f := range req.Fields {
		if h1parse.EqualFold(f.Name, "te") && httpguts.HeaderValuesContainsToken([]string{string(f.Value)}, "trailers") {
			trailers = true
		}
		if dropField(f.Name, conns, requestReplaced) || templated(tmpl, f.Name) {
			continue
		}
		if len(f.Value) == 0 && h1parse.EqualFold(f.Name, "user-agent") {
			continue // Request.Write sends no User-Agent for an empty one
		}
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	if trailers && !templated(tmpl, []byte("Te")) {
		b = append(b, "Te: trailers\r\n"...)
	}
	// setForwarded's values, unless a template replaces them.
	if len(tmpl) == 0 {
		b = append(b, ff.lines...)
	} else {
		start := 0
		for i, name := range fwdNames {
			if !templated(tmpl, name) {
				b = append(b, ff.lines[start:ff.ends[i]]...)
			}
			start = ff.ends[i]
		}
	}
	b = appendTemplates(b, tmpl, requestWriteOwns)
	// Request.Write's rule: chunked (with the announced trailers) for a
	// body of unknown length, else a length when there is a body, and 0
	// for a bodyless POST, PUT or PATCH only.
	if up != nil {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if up.field != "" {
			b = appendField(b, "Trailer", up.field)
		}
	} else if r.ContentLength > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, max(r.ContentLength, 0), 10)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// fwdFields is a connection's forwarding field values, kept from one request to the next
// (fastConn): a connection's requests share the client's address and nearly always the Host,
// so the values are worked out again only when one of those changes, at the cost of a few
// compares per request instead of the address split, the checks and the Forwarded value's
// formatting (~600 instructions). Per connection, like fastConn.remote: nothing of a request
// is kept (the Host is copied).
type fwdFields struct {
	valid  bool       // the lines are those of the values below
	remote string     // the RemoteAddr the client IP was split from
	host   string     // the Host (a copy)
	https  bool       // the request came over TLS
	client netip.Addr // RouteContext.ClientIP (Forwarded's for=)
	// lines are the field lines, in fwdNames' order: line i is lines[ends[i-1]:ends[i]]
	// (from 0 for the first), empty when that field is not sent (X-Forwarded-For and
	// X-Real-Ip without a client IP that splits off RemoteAddr and is a valid value,
	// X-Forwarded-Host with a Host that is not).
	lines []byte
	ends  [len(fwdNames)]int
}

// fwdNames are the forwarding fields as fwdFields holds them, each a template may replace.
var fwdNames = [...][]byte{[]byte("X-Forwarded-For"), []byte("X-Real-Ip"), []byte("X-Forwarded-Host"),
	[]byte("X-Forwarded-Proto"), []byte("Forwarded")}

// update makes f hold the lines for a request r from client.
func (f *fwdFields) update(r *http.Request, client netip.Addr) {
	https := r.TLS != nil
	if f.valid && r.RemoteAddr == f.remote && r.Host == f.host && https == f.https && client == f.client {
		return
	}
	f.valid, f.remote, f.host, f.https, f.client = true, r.RemoteAddr, strings.Clone(r.Host), https, client
	b := f.lines[:0]
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	ok := err == nil && httpguts.ValidHeaderFieldValue(ip)
	if ok {
		b = appendTrusted(b, "X-Forwarded-For: ", ip)
	}
	f.ends[0] = len(b)
	if ok {
		b = appendTrusted(b, "X-Real-Ip: ", ip)
	}
	f.ends[1] = len(b)
	if httpguts.ValidHeaderFieldValue(r.Host) {
		b = appendTrusted(b, "X-Forwarded-Host: ", r.Host)
	}
	f.ends[2] = len(b)
	if https {
		b = append(b, "X-Forwarded-Proto: https\r\n"...)
	} else {
		b = append(b, "X-Forwarded-Proto: http\r\n"...)
	}
	f.ends[3] = len(b)
	b = append(b, "Forwarded: "...)
	b = appendForwarded(b, client, r.Host, https)
	b = append(b, "\r\n"...)
	f.ends[4] = len(b)
	f.lines = b
}

// appendTrusted appends a field line whose value the caller checked: prefix is the name with
// its ": ".
func appendTrusted(b []byte, prefix, v string) []byte {
	b = append(b, prefix...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// requestWriteOwns: the fields http.Request.Write takes from the
// request, not its header (a template cannot set them).
func requestWriteOwns(name string) bool {
	switch name {
	case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// appendRequestURI appends a request-target as url.URL.RequestURI
// writes it for an origin-form URL, without allocating.
func appendRequestURI(b []byte, escapedPath, rawQuery string, forceQuery bool) []byte {
	if escapedPath != "" {
		b = append(b, escapedPath...)
	} else {
		b = append(b, '/')
	}
	if forceQuery || rawQuery != "" {
		b = append(b, '?')
		b = append(b, rawQuery...)
	}
	return b
}

// cleanQuery is ReverseProxy's treatment of the client's query: one
// with a ';' or a malformed escape is parsed and re-encoded, which
// drops the parameters that do not parse.
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}
