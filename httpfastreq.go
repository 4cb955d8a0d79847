package smartproxy

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// fastReq is a fast-path request's per-request objects in one
// allocation: the *http.Request, its URL, the one-value lists of its
// header and route's scratch (its MatchQuery and proxyReq). It is reused
// only where nothing can keep a part of it past its request: whatever
// does (a custom Matcher its query, a handler its request, a backend
// transport its body) must keep values no later request changes. A
// request's objects go back to fastReqs (releaseRequest) only when its
// path kept nothing: no code of the user's saw them (routeScratch.shared:
// a custom Matcher, SecurityChecker, HostFunc or PortFunc), and, on the
// event loops, every such request (the loop's own backend exchange, a
// request log and rejections that copy what they keep), on the goroutine
// path a bodyless request fastForward carried; any other is left to the
// collector. The header map
// goes with it; the strings are new for every request. Pooled, not kept
// per connection: an idle connection holds none.
type fastReq struct {
	r     http.Request
	u     url.URL
	route routeScratch
	lists [fastReqLists]string
	body  fastBody // the request's body (serveOne)
}

// fastReqs holds released requests' objects (fastConn.releaseRequest).
var fastReqs = sync.Pool{New: func() any { return new(fastReq) }}

// releaseRequest gives the current request's objects back to fastReqs, unless code of the
// user's was given a part of them (routeScratch.shared), and clears fc.cur. The caller knows
// that nothing of the proxy's holds a part of them any more (see fastReq).
func (fc *fastConn) releaseRequest() {
	if fr := fc.cur; fr != nil {
		if !fr.route.shared {
			fastReqs.Put(fr)
		}
		fc.cur = nil
	}
}

// fastReqLists is how many fields a head may have for their one-value
// lists to live in fastReq (most API clients send fewer; a browser's
// larger head takes one allocation more).
const fastReqLists = 8

// request builds the *http.Request the shared request path takes, and
// makes it fc's current request (fc.cur).
func (fc *fastConn) request(req *h1parse.Request) (*http.Request, error) {
	fr := fastReqs.Get().(*fastReq)
	hdr := fr.r.Header // a released request's map, emptied below; nil in a new one
	*fr = fastReq{}
	// One string holds the target, the host and every value, and one
	// array every one-value list (cap 1: a handler's append copies).
	size := len(req.Target) + len(req.Host)
	for _, f := range req.Fields {
		size += len(f.Value)
	}
	var sb strings.Builder
	sb.Grow(size)
	sb.Write(req.Target)
	sb.Write(req.Host)
	for _, f := range req.Fields {
		sb.Write(f.Value)
	}
	all := sb.String()
	target, host := all[:len(req.Target)], all[len(req.Target):len(req.Target)+len(req.Host)]
	if !parseOriginForm(target, &fr.u) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return nil, err
		}
		fr.u = *u
	}
	if hdr == nil {
		hdr = make(http.Header, len(req.Fields))
	} else {
		clear(hdr)
	}
	lists := fr.lists[:]
	if len(req.Fields) > len(lists) {
		lists = make([]string, len(req.Fields))
	}
	at := len(target) + len(host)
	for i, f := range req.Fields {
		v := all[at : at+len(f.Value)]
		at += len(f.Value)
		k := fieldKey(f.Name)
		if k == "Host" || k == "Transfer-Encoding" {
			continue // as net/http: Host is r.Host, the framing is the Request's
		}
		if old, ok := hdr[k]; ok {
			hdr[k] = append(old, v)
			continue
		}
		lists[i] = v
		hdr[k] = lists[i : i+1 : i+1]
	}
	// The connection's template carries its context: copying it costs
	// nothing where WithContext would allocate.
	r := &fr.r
	*r = *fc.reqTmpl
	r.Method, r.URL, r.Header, r.Host, r.RequestURI, r.Close = fastMethod(req.Method), &fr.u, hdr, host, target, req.Close
	if req.Chunked {
		r.TransferEncoding, r.ContentLength = []string{"chunked"}, -1
		for _, list := range hdr["Trailer"] { // announced trailers, as net/http keeps them
			for name := range strings.SplitSeq(list, ",") {
				if k := textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)); k != "" {
					if r.Trailer == nil {
						r.Trailer = make(http.Header)
					}
					r.Trailer[k] = nil
				}
			}
		}
		delete(hdr, "Trailer")
	} else if req.ContentLength > 0 {
		r.ContentLength = req.ContentLength
	}
	fc.off = req.HeadLen // the body follows in buf
	fc.cur = fr
	return r, nil
}

// fastMethod is the method as a string; the usual ones cost no
// allocation.
func fastMethod(m []byte) string {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodPatch:
		return http.MethodPatch
	case http.MethodOptions:
		return http.MethodOptions
	}
	return string(m)
}

// parseOriginForm sets u to what url.ParseRequestURI returns for target,
// an origin-form target, when its path holds no byte that escaping
// would change (no '%' among them): Path is then the path as sent and
// RawPath empty, and the usual target costs neither the URL's allocation
// nor the unescaping pass. It reports false, having left u alone, for
// any other target: the caller parses it with url.ParseRequestURI.
func parseOriginForm(target string, u *url.URL) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	if path == "" || path[0] != '/' {
		return false
	}
	for i := 0; i < len(path); i++ {
		if !pathVerbatim[path[i]] {
			return false
		}
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c < ' ' || c == 0x7f {
			return false // ParseRequestURI's error
		}
	}
	// A lone '?' at the end is ForceQuery's (ParseRequestURI's rule:
	// the first '?' ends the path, the rest is the query).
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// pathVerbatim holds the bytes url's path escaping leaves as they are:
// RFC 3986's unreserved characters and the reserved ones a path may
// carry ('?' ends the path before this is asked).
var pathVerbatim = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// fieldKey is a field name in canonical form; the common names cost no
// allocation.
func fieldKey(name []byte) string {
	if k, ok := commonFieldKeys[string(name)]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// commonFieldKeys maps the usual spellings of common request field
// names to their canonical keys.
var commonFieldKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Length", "Content-Type", "Cookie", "Host",
		"If-Modified-Since", "If-None-Match", "Origin", "Pragma", "Referer", "Te", "Upgrade",
		"User-Agent", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip",
		"X-Request-Id", "Forwarded", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-Dest",
		"Upgrade-Insecure-Requests", "Priority", "Dnt", "Range", "Expect", "Trailer"} {
		m[k], m[strings.ToLower(k)] = k, k
	}
	return m
}()
