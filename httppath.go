package smartproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Request path canonicalisation. The proxy decides on the path (match.path,
// target sub-matches, excludePaths, rate limits by path, rewrites) and the
// backend serves a path: the two must be the same path, or a request can
// be checked as one resource and served as another ("/admin/..%2f" is
// "/" to a decoder and under /admin to a prefix router; "/admin;x/secret"
// is not under /admin here and is /admin/secret to Tomcat). So on a port
// where any route's decision depends on the path, every request's path is
// brought to one canonical form before routing, and that form is what is
// checked and forwarded:
//
//   - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are
//     decoded and other escapes upper-cased (RFC 3986 6.2.2.1, 6.2.2.2);
//   - "." and ".." segments are resolved (RFC 3986 5.2.4; ".." never climbs
//     above the root) and empty segments ("//") merged.
//
// Whatever has no canonical form is refused with 400, because backends
// disagree on it: an encoded '/' or '\' (%2F, %5C), a raw '\', a ';'
// (path parameters, which Servlet containers strip, "..;" included), and
// encoded control characters. A route with action.options.pathNormalization
// "reject" refuses non-canonical paths too rather than normalise them.

// Values of ActionOptions.PathNormalization.
const (
	// PathNormalize forwards the canonical form of a path that has one
	// (the default).
	PathNormalize = "normalize"
	// PathReject answers 400 to any path that is not already canonical.
	PathReject = "reject"
)

// pathVerdict is what canonicalPath found.
type pathVerdict uint8

const (
	pathCanonical    pathVerdict = iota // already canonical
	pathNormalizable                    // has a canonical form that differs
	pathAmbiguous                       // backends may read it differently: refuse
)

// errAmbiguousPath is why a path without a canonical form is refused.
var errAmbiguousPath = errors.New("ambiguous request path (encoded '/' or '\\', '\\', ';' or an encoded control character)")

// errNonCanonicalPath is why a "reject" route refuses a normalisable path.
var errNonCanonicalPath = errors.New("request path is not in canonical form (dot-segments, '//' or needless percent-encoding)")

// canonicalPath returns the canonical form of the escaped path p (as
// URL.EscapedPath gives it) and whether it differs or has none. Paths
// that do not start with '/' ("*", "") are left alone. The common path,
// already canonical, is one scan and no allocation.
func canonicalPath(p string) (string, pathVerdict) {
	if !strings.HasPrefix(p, "/") || !needsCanon(p) {
		return p, pathCanonical
	}
	// Decode what has one meaning, refuse what has several.
	b := make([]byte, 0, len(p))
	changed := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case ';', '\\':
			return p, pathAmbiguous
		case '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return p, pathAmbiguous // the URL parser refuses these; be safe anyway
			}
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case isUnreserved(v):
				b = append(b, v)
				changed = true
			case v == '/' || v == '\\' || v < 0x20 || v == 0x7f:
				return p, pathAmbiguous
			default:
				h1, h2 := upperHex(p[i+1]), upperHex(p[i+2])
				changed = changed || h1 != p[i+1] || h2 != p[i+2]
				b = append(b, '%', h1, h2)
			}
			i += 2
		default:
			b = append(b, c)
		}
	}
	// Resolve dot-segments and merge empty ones, keeping a trailing slash
	// (and making one where the path ended in "." or "..", as RFC 3986
	// does: "/a/b/.." is "/a/").
	segs := make([]string, 0, 8)
	rest := string(b[1:])
	trailing := false
	for {
		seg, tail, more := strings.Cut(rest, "/")
		switch seg {
		case "":
			if more {
				changed = true // "//": an empty segment
			} else {
				trailing = len(segs) > 0
			}
		case ".":
			changed = true
			trailing = !more
		case "..":
			changed = true
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
			trailing = !more
		default:
			segs = append(segs, seg)
			trailing = false
		}
		if !more {
			break
		}
		rest = tail
	}
	if !changed {
		return p, pathCanonical
	}
	out := "/" + strings.Join(segs, "/")
	if trailing && len(segs) > 0 {
		out += "/"
	}
	return out, pathNormalizable
}

// needsCanon reports whether p may not be canonical: it has an escape, a
// ';' or '\', or a '/' followed by '/' or '.' (which "/.well-known"
// also has; the slow path then finds it canonical).
func needsCanon(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', ';', '\\':
			return true
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return true
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func upperHex(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// isUnreserved reports an RFC 3986 unreserved character.
func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// setRequestPath makes canon (a canonical escaped path) the path of r:
// what routes match, checks see, templates expand and the backend (or a
// socket handler, through RequestURI) receives.
func setRequestPath(r *http.Request, canon string) error {
	p, err := url.PathUnescape(canon)
	if err != nil {
		return fmt.Errorf("canonical path %q: %w", canon, err)
	}
	r.URL.Path, r.URL.RawPath = p, canon
	if r.URL.EscapedPath() != canon {
		return fmt.Errorf("canonical path %q does not survive URL encoding", canon)
	}
	r.RequestURI = r.URL.RequestURI()
	return nil
}

// checkPathOption validates action.options.pathNormalization.
func checkPathOption(v string) error {
	switch v {
	case "", PathNormalize, PathReject:
		return nil
	}
	return fmt.Errorf("unknown value %q (want %q or %q)", v, PathNormalize, PathReject)
}

// pathDependent reports whether a decision about a request on this route
// depends on its path: match.path, a target sub-match by path, a rewrite,
// excludePaths of basicAuth or jwtAuth, or a rate limit keyed by path.
func (st *routeState) pathDependent() bool {
	if h := st.http; h != nil {
		if h.path != nil || h.rewrite != nil {
			return true
		}
		for _, tm := range h.targets {
			if tm != nil && tm.path != nil {
				return true
			}
		}
	}
	return st.sec != nil && st.sec.http.PathDependent()
}

// pathGate is, for one route generation, the ports on which some route
// decides on the path: there every request's path is canonicalised.
// Elsewhere the path decides nothing in the proxy and is forwarded as
// received, as a TCP proxy would.
type pathGate struct {
	gen   *routeSet
	ports []PortSpec // of the path-dependent routes
}

// pathMatters reports whether requests on port must have canonical paths
// under the route generation cur, the one the request is then matched in
// (a later generation could add the first path route between the two).
// The gate is rebuilt once per generation.
func (ts *transportSet) pathMatters(cur *routeSet, port int) bool {
	g := ts.gate.Load()
	if g == nil || g.gen != cur {
		g = &pathGate{gen: cur}
		if cur != nil {
			for _, r := range cur.routes {
				if r.state != nil && r.state.pathDependent() {
					g.ports = append(g.ports, r.Match.Ports)
				}
			}
		}
		ts.gate.Store(g) // racing rebuilds store equal gates
	}
	for _, ps := range g.ports {
		if ps.Contains(port) {
			return true
		}
	}
	return false
}
