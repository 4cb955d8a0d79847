package smartproxy

import (
	"math/rand/v2"
	"net/url"
	"reflect"
	"testing"
)

// TestParseOriginFormMatchesNetURL: the fast path's own parse of an
// origin-form target gives exactly the URL url.ParseRequestURI gives, and
// leaves to it every target it does not take (escapes, bytes the path
// escaping would change, a path that does not start with '/').
func TestParseOriginFormMatchesNetURL(t *testing.T) {
	check := func(target string) (took bool) {
		t.Helper()
		var got url.URL
		took = parseOriginForm(target, &got)
		want, err := url.ParseRequestURI(target)
		switch {
		case !took:
			if got != (url.URL{}) {
				t.Fatalf("%q: not taken, but u was written: %#v", target, got)
			}
		case err != nil:
			t.Fatalf("%q: taken, but url.ParseRequestURI refuses it: %v", target, err)
		case !reflect.DeepEqual(&got, want):
			t.Fatalf("%q: got %#v, url.ParseRequestURI %#v", target, got, *want)
		}
		return took
	}
	for _, tc := range []struct {
		target string
		took   bool
	}{
		{"/", true}, {"/1k", true}, {"/a/b.c?x=1&y=2", true}, {"/a?", true}, {"/a??", true},
		{"/a?b?", true}, {"/?", true}, {"//evil.example/x", true}, {"/a:b@c;d=e,f+g$h&i~j", true},
		{"/a?q=%zz#frag", true}, {"/%41", false}, {"/a%2Fb", false}, {"/a b", false},
		{"/a#frag", false}, {"/a!b", false}, {"/a(b)", false}, {"/a'b", false}, {"/a*", false},
		{"/a[b]", false}, {"/é", false}, {"/a\x7f", false}, {"/a?\x01", false}, {"?x", false},
		{"", false}, {"*", false}, {"http://h/x", false},
	} {
		if took := check(tc.target); took != tc.took {
			t.Errorf("%q: taken %v, want %v", tc.target, took, tc.took)
		}
	}
	// Random targets over every byte the head parser lets through
	// (visible ASCII), '/', '?' and '%' weighted up.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("/??%%")
	for c := byte('!'); c <= '~'; c++ {
		alphabet = append(alphabet, c)
	}
	taken := 0
	for range 200000 {
		b := []byte{'/'}
		for range rng.IntN(12) {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		if check(string(b)) {
			taken++
		}
	}
	if taken == 0 {
		t.Fatal("no random target taken")
	}
}
