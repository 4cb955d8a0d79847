package smartproxy

import (
	"fmt"
	"strings"

	"github.com/gobwas/glob"
)

// pathPattern is a compiled match.path: segments separated by '/', each
// a literal, a ":name" capture of one segment, or a glob ("*.png") within
// one segment; a final "*" segment matches any remainder, including none.
//
//	/api/users           exactly that path (a trailing slash is ignored)
//	/api/*               /api, /api/, /api/v1/users; remainder "v1/users"
//	/users/:id           /users/42 with id=42
//	/api/users/:id/*     /api/users/42/posts/7 with id=42, remainder "posts/7"
type pathPattern struct {
	raw      string
	segs     []pathSeg
	wildcard bool // ends in "/*"
	literal  int  // literal characters, for specificity
}

type pathSeg struct {
	lit   string
	param string
	glob  *glob.Pattern
}

// pathMatch is what a matching path yields for templates and rewrites.
type pathMatch struct {
	params    map[string]string
	remainder string
}

func compilePath(p string) (*pathPattern, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path pattern %q must start with '/'", p)
	}
	pp := &pathPattern{raw: p}
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

// match reports whether path matches and, when want is set, what it
// captured. It allocates only for captures.
func (pp *pathPattern) match(path string, want bool) (pathMatch, bool) {
	var m pathMatch
	rest := strings.TrimPrefix(path, "/")
	for _, s := range pp.segs {
		if rest == "" {
			return m, false
		}
		seg, tail, _ := strings.Cut(rest, "/")
		switch {
		case s.param != "":
			if want {
				if m.params == nil {
					m.params = make(map[string]string, 2)
				}
				m.params[s.param] = seg
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
		m.remainder = rest
		return m, true
	}
	// Exact: nothing may follow but a trailing slash.
	return m, rest == ""
}
