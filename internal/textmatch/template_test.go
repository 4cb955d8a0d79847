package textmatch

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testVarMap holds the variables the template tests know.
var testVarMap = map[string]string{
	"domain":          "example.com",
	"path":            "/a?b=c",
	"port":            "8443",
	"x":               "X",
	"empty":           "",
	"headers.x-foo":   "bar",
	"headers.host":    "h.example",
	"a_b.c9":          "ok",
	"braces":          "{domain}", // a value that looks like a placeholder
	"-":               "dash",
	"context.headers": "ctx",
}

// testVars is the lookup used by the template tests.
func testVars(name string) (string, bool) {
	v, ok := testVarMap[name]
	return v, ok
}

func TestTemplateExpand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, tmpl, want string
	}{
		{"no braces", "https://example.com/", "https://example.com/"},
		{"empty template", "", ""},
		{"one var", "{domain}", "example.com"},
		{"redirect", "https://{domain}:{port}{path}", "https://example.com:8443/a?b=c"},
		{"adjacent vars", "{x}{x}{x}", "XXX"},
		{"empty value", "a{empty}b", "ab"},
		{"unknown var stays", "{nope}/{domain}", "{nope}/example.com"},
		{"unknown dotted stays", "{headers.nope}", "{headers.nope}"},
		{"dotted name", "{headers.host}", "h.example"},
		{"dash in dotted name", "{headers.x-foo}", "bar"},
		{"underscore digits", "{a_b.c9}", "ok"},
		{"name of only a dash", "{-}", "dash"},
		{"empty name", "{}", "{}"},
		{"empty name then var", "{}{x}", "{}X"},
		{"double open", "{{x}", "{X"},
		{"double open and close", "{{x}}", "{X}"},
		{"triple open", "{{{x}", "{{X"},
		{"unclosed", "{x", "{x"},
		{"unclosed after var", "{x}{x", "X{x"},
		{"lone open", "{", "{"},
		{"lone close", "}", "}"},
		{"close before open", "}{x}{", "}X{"},
		{"space in name", "{a b}", "{a b}"},
		{"space in name then var", "{a b}{x}", "{a b}X"},
		{"slash in name", "{x/y}", "{x/y}"},
		{"colon in name", "{x:y}", "{x:y}"},
		{"nested placeholder", "{a{x}}", "{aX}"},
		{"json-like", `{"k": "{x}"}`, `{"k": "X"}`},
		{"value not re-expanded", "{braces}", "{domain}"},
		{"case sensitive", "{Domain}", "{Domain}"},
		{"non-ASCII name", "{dömain}", "{dömain}"},
		{"non-ASCII around", "é{x}é", "éXé"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Expand(tt.tmpl, testVars))
		})
	}
}

// TestTemplateLookupSeesOnlyNames checks which names reach lookup: never
// the empty name nor one with characters outside [a-zA-Z0-9_.-].
func TestTemplateLookupSeesOnlyNames(t *testing.T) {
	t.Parallel()
	var got []string
	Expand("{}{a b}{ok}{x-y.z}{{in}}{a:b}{é}", func(name string) (string, bool) {
		got = append(got, name)
		return "", false
	})
	require.Equal(t, []string{"ok", "x-y.z", "in"}, got)
}

// TestTemplateNoAllocWithoutBraces pins the fast path: templates without
// placeholders are returned as they are.
func TestTemplateNoAllocWithoutBraces(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	allocs := testing.AllocsPerRun(100, func() {
		_ = Expand("https://example.com/static/path", testVars)
	})
	require.Zero(t, allocs)
}

// TestTemplateManyBraces feeds a long run of '{' ending in one
// placeholder: every brace but the one that opens "{x}" stays, and lookup
// is asked about "x" only. (BenchmarkTemplateExpand/braces shows the cost
// stays linear.)
func TestTemplateManyBraces(t *testing.T) {
	t.Parallel()
	const n = 1 << 16
	calls := 0
	out := Expand(strings.Repeat("{", n)+"x}", func(name string) (string, bool) {
		calls++
		return testVars(name)
	})
	// Compared as a bool: testify cannot display strings this long.
	require.True(t, out == strings.Repeat("{", n-1)+"X", "unexpected expansion of %d bytes", len(out))
	require.Equal(t, 1, calls)
}

func BenchmarkTemplateExpand(b *testing.B) {
	cases := []struct{ name, tmpl string }{
		{"plain", "https://example.com/static/path"},
		{"redirect", "https://{domain}:{port}{path}"},
		{"unknown", "{nope}{other}{domain}"},
		{"braces", strings.Repeat("{", 4096) + "{x}"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Expand(c.tmpl, testVars)
			}
		})
	}
}
