package auth

import (
	"fmt"
	"path"
	"strings"

	"github.com/gobwas/glob"

	"github.com/gosmartproxy/smartproxy/schema"
)

// pathGlobs compiles excludePaths: "**/" spans zero or more segments.
var pathGlobs = glob.Compiler{Separators: []rune{'/'}, Globstar: true}

// pathSet is a compiled excludePaths list: globs over the request path
// with '/' as separator ("*" stays within a segment, "**" spans segments).
type pathSet struct{ globs []*glob.Pattern }

func compilePathSet(fe *schema.Collector, field string, patterns []string) *pathSet {
	if len(patterns) == 0 {
		return nil
	}
	ps := &pathSet{}
	for i, p := range patterns {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !strings.HasPrefix(p, "/") {
			fe.Failf(f, "pattern %q must start with '/'", p)
			continue
		}
		g, err := pathGlobs.Compile(p)
		if err != nil {
			fe.Fail(f, fmt.Errorf("invalid pattern %q: %w", p, err))
			continue
		}
		ps.globs = append(ps.globs, g)
	}
	return ps
}

// match reports whether p is excluded. Only clean paths can be: a path
// with "..", "." or "//" segments could match a pattern here and name
// another resource once the backend normalises it ("/public/../admin"),
// so it keeps authentication (fail closed).
func (ps *pathSet) match(p string) bool {
	if ps == nil || !isCleanPath(p) {
		return false
	}
	for _, g := range ps.globs {
		if g.Match(p) {
			return true
		}
	}
	return false
}

func isCleanPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}
