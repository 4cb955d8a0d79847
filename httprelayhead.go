package smartproxy

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// What net/http's own parts would change in a relayed head, undone on
// the net/http stack so that a route behaves as on the fast path
// (httpfastequiv_heads_test.go pins both): the hop-by-hop fields of a
// relayed 1xx, a 304's Content-Length and Content-Type, a request's
// second User-Agent. (A response's "Connection: close, X-Name" keeps its
// X-Name out: h1client's RoundTrip keeps the field, and http.Transport's
// heads are recovered by the tap, httpconnfield.go.)

// relayWriter is the client's ResponseWriter on net/http's server while
// the reverse proxy relays a backend's response.
//
// ReverseProxy copies a 1xx head's fields to the client as they came
// (its Got1xxResponse hook removes no hop-by-hop field); RFC 9110 7.6.1
// requires a proxy to remove them from every message it forwards, and
// the fast path does.
//
// net/http's server deletes Content-Length and Content-Type from every
// 304 (transfer.go's suppressedHeaders304). RFC 9110 8.6 lets a 304 carry
// the Content-Length of the selected representation, 15.4.5 the fields a
// 200 would have; a proxy relays them, as HAProxy and the fast path do.
// The server's suppression goes by the canonical key only, so the two
// are moved to lower-case keys, which it writes as they are.
type relayWriter struct {
	http.ResponseWriter
	http1 bool // the client speaks HTTP/1.x: the 304 fields are moved
}

// WriteHeader filters the head of a relayed 1xx or 304 and sends it.
func (w *relayWriter) WriteHeader(code int) {
	h := w.Header()
	switch {
	case code >= 100 && code < 200 && code != http.StatusSwitchingProtocols:
		removeHopByHop(h)
	case code == http.StatusNotModified && w.http1:
		for _, k := range [...]string{"Content-Length", "Content-Type"} {
			if v, ok := h[k]; ok {
				delete(h, k)
				h[strings.ToLower(k)] = v
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController (flushes, the hijack of an
// upgrade) the server's writer.
func (w *relayWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// removeHopByHop deletes from h the fields its Connection names and the
// hop-by-hop fields (the fast forward's list, hopByHop).
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// uaRest is the key under which a request's User-Agent values after the
// first go to the backend: Request.Write, which both backend clients of
// the net/http stack use, writes the first User-Agent alone and leaves
// out every other value under the canonical key, but writes a
// non-canonical key as it is. The fast path forwards every User-Agent
// line, as HAProxy does (a second one is the client's doing; dropping it
// would hide what the backend may want to log or refuse).
const uaRest = "user-agent"

// keepUserAgents makes every User-Agent of h reach the backend (uaRest),
// but empty ones: Request.Write sends none for an empty first one, and
// the fast path leaves out every empty one.
func keepUserAgents(h http.Header) {
	ua := h["User-Agent"]
	if len(ua) < 2 {
		return
	}
	var rest []string
	for _, v := range ua[1:] {
		if v != "" {
			rest = append(rest, v)
		}
	}
	h["User-Agent"] = ua[:1]
	if rest != nil {
		h[uaRest] = rest
	}
}

// normalizeLength writes a response's Content-Length as a plain decimal
// ("002" as "2"), as the fast path writes the length it parsed; net/http's
// server would relay the backend's spelling. ReadResponse has refused
// what is not a length.
func normalizeLength(h http.Header) {
	if v := h["Content-Length"]; len(v) == 1 && len(v[0]) > 1 && v[0][0] == '0' {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil {
			h["Content-Length"] = []string{strconv.FormatInt(n, 10)}
		}
	}
}
