package textmatch

import (
	"fmt"
	"strings"

	"github.com/gobwas/glob"
)

// Path is a compiled path pattern (see the package doc for the syntax).
// It is immutable and safe for concurrent use.
type Path struct {
	raw      string
	segs     []pathSeg
	wildcard bool // ends in "/*" or '/': a prefix of what follows
	literal  int  // literal characters, for Specificity
}

type pathSeg struct {
	lit   string
	param string
	glob  *glob.Pattern
}

// PathMatch is what a matching path captured: the ":name" segments and,
// for a prefix pattern, the rest of the path after the prefix (without
// its leading '/').
type PathMatch struct {
	Params    map[string]string
	Remainder string
}

// CompilePath compiles pattern p, which must start with '/'.
func CompilePath(p string) (*Path, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path pattern %q must start with '/'", p)
	}
	pp := &Path{raw: p}
	parts := splitPath(p)
	for i, part := range parts {
		switch {
		case part == "*" && i == len(parts)-1:
			pp.wildcard = true
		case strings.HasPrefix(part, ":"):
			if len(part) == 1 {
				return nil, fmt.Errorf("path pattern %q: empty parameter name", p)
			}
			pp.segs = append(pp.segs, pathSeg{param: part[1:]})
		case strings.ContainsAny(part, "*?["):
			g, err := glob.Compile(part)
			if err != nil {
				return nil, fmt.Errorf("path pattern %q: %w", p, err)
			}
			pp.segs = append(pp.segs, pathSeg{glob: g})
			pp.literal += len(part) - strings.Count(part, "*")
		default:
			pp.segs = append(pp.segs, pathSeg{lit: part})
			pp.literal += len(part) + 1
		}
	}
	// TS compatibility: a pattern ending in '/' is a prefix ("/api/"
	// matches "/api/users"), and "/" therefore matches every path. Read
	// as "/api/*", so the segment rules stay one set.
	if strings.HasSuffix(p, "/") {
		pp.wildcard = true
	}
	return pp, nil
}

// splitPath splits "/a/b/" into ["a", "b"]; "/" into none.
func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// String is the pattern as written.
func (pp *Path) String() string { return pp.raw }

// Prefix reports whether the pattern matches everything below it too
// (it ends in "/*" or '/').
func (pp *Path) Prefix() bool { return pp.wildcard }

// Specificity ranks patterns for "most specific first": literal
// characters count most, then segments, and an exact pattern ranks above
// the prefix pattern with the same segments. It is at least 0.
func (pp *Path) Specificity() int {
	s := pp.literal<<8 + len(pp.segs)<<1
	if !pp.wildcard {
		s++
	}
	return s
}

// Match reports whether path matches. It does not allocate.
func (pp *Path) Match(path string) bool {
	_, ok := pp.match(path, false)
	return ok
}

// Capture reports whether path matches and what it captured. It
// allocates only for ":name" captures.
func (pp *Path) Capture(path string) (PathMatch, bool) {
	return pp.match(path, true)
}

func (pp *Path) match(path string, want bool) (PathMatch, bool) {
	var m PathMatch
	rest := strings.TrimPrefix(path, "/")
	for _, s := range pp.segs {
		if rest == "" {
			return m, false
		}
		seg, tail, _ := strings.Cut(rest, "/")
		switch {
		case s.param != "":
			if want {
				if m.Params == nil {
					m.Params = make(map[string]string, 2)
				}
				m.Params[s.param] = seg
			}
		case s.glob != nil:
			if !s.glob.Match(seg) {
				return m, false
			}
		default:
			if seg != s.lit {
				return m, false
			}
		}
		rest = tail
	}
	if pp.wildcard {
		m.Remainder = rest
		return m, true
	}
	// Exact: nothing may follow but a trailing slash.
	return m, rest == ""
}
