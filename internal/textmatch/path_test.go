package textmatch

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPathPattern(t *testing.T) {
	tests := []struct {
		pattern, path string
		ok            bool
		params        map[string]string
		rest          string
	}{
		{"/api/users", "/api/users", true, nil, ""},
		{"/api/users", "/api/users/", true, nil, ""},
		{"/api/users", "/api/users/1", false, nil, ""},
		{"/api/*", "/api", true, nil, ""},
		{"/api/*", "/api/v1/users", true, nil, "v1/users"},
		{"/api/*", "/apix", false, nil, ""},
		{"/users/:id", "/users/42", true, map[string]string{"id": "42"}, ""},
		{"/users/:id", "/users", false, nil, ""},
		{"/api/users/:id/*", "/api/users/42/posts/7", true, map[string]string{"id": "42"}, "posts/7"},
		{"/img/*.png", "/img/a.png", true, nil, ""},
		{"/img/*.png", "/img/a.jpg", false, nil, ""},
		{"/", "/", true, nil, ""},
		{"/*", "/anything/at/all", true, nil, "anything/at/all"},
	}
	for _, tc := range tests {
		pp, err := CompilePath(tc.pattern)
		require.NoError(t, err)
		m, ok := pp.Capture(tc.path)
		require.Equal(t, tc.ok, ok, "%s ~ %s", tc.pattern, tc.path)
		require.Equal(t, tc.ok, pp.Match(tc.path), "%s ~ %s", tc.pattern, tc.path)
		if ok {
			require.Equal(t, tc.params, m.Params, tc.pattern)
			require.Equal(t, tc.rest, m.Remainder, tc.pattern)
		}
	}
}

// TestPathPatternTSPrefix: as in TS, a pattern ending in '/' is a prefix
// and "/" matches every path; our segment rules hold otherwise (the
// prefix ends at a segment boundary, and "/api/" is read as "/api/*").
func TestPathPatternTSPrefix(t *testing.T) {
	tests := []struct {
		pattern, path string
		ok            bool
		rest          string
	}{
		{"/", "/", true, ""},
		{"/", "/x", true, "x"},
		{"/", "/a/b/c", true, "a/b/c"},
		{"/api/", "/api/users", true, "users"},
		{"/api/", "/api/users/1", true, "users/1"},
		{"/api/", "/api/", true, ""},
		{"/api/", "/api", true, ""},
		{"/api/", "/apix", false, ""},
		{"/api/", "/apix/users", false, ""},
		{"/api/", "/other/api/users", false, ""},
		{"/users/:id/", "/users/42/posts", true, "posts"},
		{"/img/*.png/", "/img/a.png/thumb", true, "thumb"},
	}
	for _, tc := range tests {
		pp, err := CompilePath(tc.pattern)
		require.NoError(t, err)
		require.True(t, pp.Prefix(), tc.pattern)
		m, ok := pp.Capture(tc.path)
		require.Equal(t, tc.ok, ok, "%s ~ %s", tc.pattern, tc.path)
		if ok {
			require.Equal(t, tc.rest, m.Remainder, "%s ~ %s", tc.pattern, tc.path)
		}
	}
	// The same specificity as the "/*" spelling: one rule, two spellings.
	a, _ := CompilePath("/api/")
	b, _ := CompilePath("/api/*")
	require.Equal(t, b.Specificity(), a.Specificity())
}

func TestPathPatternErrors(t *testing.T) {
	for _, p := range []string{"", "api", "/users/:", "/img/[a"} {
		_, err := CompilePath(p)
		require.Error(t, err, p)
	}
}

// TestPathSpecificity: literal characters rank first, then segments,
// and an exact pattern above the prefix one of the same segments.
func TestPathSpecificity(t *testing.T) {
	spec := func(p string) int {
		pp, err := CompilePath(p)
		require.NoError(t, err)
		return pp.Specificity()
	}
	require.Greater(t, spec("/api/users"), spec("/api/*"))
	require.Greater(t, spec("/api"), spec("/api/*"))
	require.Greater(t, spec("/api/:id"), spec("/api/*"))
	require.Greater(t, spec("/api/*"), spec("/*"))
	require.Equal(t, spec("/*"), spec("/"))
	require.Zero(t, spec("/"))
}

func TestPathMatchNoAlloc(t *testing.T) {
	pp, err := CompilePath("/api/:id/*.json")
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() { _ = pp.Match("/api/42/x.json") })
	require.Zero(t, allocs)
}
