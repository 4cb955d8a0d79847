package auth

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

var testClient = netip.MustParseAddr("192.0.2.10")

// mustCompile compiles s and fails the test on any error.
func mustCompile(t testing.TB, c Config) *Checker {
	t.Helper()
	cs, err := Compile(c)
	require.NoError(t, err)
	require.NotNil(t, cs)
	return cs
}

// doAuth runs checkHTTP on a request built by mod and returns the
// recorder and the verdict.
func doAuth(cs *Checker, path string, now time.Time, mod func(*http.Request)) (*httptest.ResponseRecorder, bool) {
	r := httptest.NewRequest(http.MethodGet, "http://example.com"+path, nil)
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	ok := cs.Check(w, r, testClient, now) == nil
	return w, ok
}

func withBasic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func bcryptHash(t testing.TB, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	require.NoError(t, err)
	return string(h)
}

func TestBasicAuth(t *testing.T) {
	h := bcryptHash(t, "s3cret")
	y := "$2y$" + strings.TrimPrefix(bcryptHash(t, "yyy"), "$2a$") // PHP's prefix
	cs := mustCompile(t, Config{BasicAuth: &BasicAuth{
		Realm: "Admin area",
		Users: []BasicAuthUser{
			{Username: "plain", Password: "pa:ss"},
			{Username: "hashed", Password: h},
			{Username: "php", Password: y},
		},
		ExcludePaths: []string{"/health", "/public/**"},
	}})
	now := time.Now()
	cases := []struct {
		name string
		path string
		mod  func(*http.Request)
		ok   bool
	}{
		{"plaintext", "/", withBasic("plain", "pa:ss"), true},
		{"plaintext wrong", "/", withBasic("plain", "pa:sS"), false},
		{"plaintext prefix", "/", withBasic("plain", "pa:"), false},
		{"bcrypt", "/", withBasic("hashed", "s3cret"), true},
		{"bcrypt again (cached)", "/", withBasic("hashed", "s3cret"), true},
		{"bcrypt wrong", "/", withBasic("hashed", "s3creT"), false},
		{"bcrypt $2y$", "/", withBasic("php", "yyy"), true},
		{"unknown user", "/", withBasic("nobody", "s3cret"), false},
		{"no credentials", "/", nil, false},
		{"bearer instead", "/", func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, false},
		{"excluded exact", "/health", nil, true},
		{"excluded subtree", "/public/css/site.css", nil, true},
		{"not excluded", "/healthz", nil, false},
		{"dot segments keep auth", "/public/../admin", nil, false},
		{"double slash keeps auth", "//public/x", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, ok := doAuth(cs, c.path, now, c.mod)
			require.Equal(t, c.ok, ok)
			if c.ok {
				require.Equal(t, http.StatusOK, w.Code, "nothing written on success")
				return
			}
			require.Equal(t, http.StatusUnauthorized, w.Code)
			require.Equal(t, `Basic realm="Admin area", charset="UTF-8"`, w.Header().Get("WWW-Authenticate"))
		})
	}
}

func TestBasicAuthReasons(t *testing.T) {
	cs := mustCompile(t, Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}})
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	err := cs.Check(httptest.NewRecorder(), r, testClient, time.Now())
	require.Equal(t, ReasonNoCredentials, rejectReasonOfErr(t, err))
	r.SetBasicAuth("u", "x")
	err = cs.Check(httptest.NewRecorder(), r, testClient, time.Now())
	require.Equal(t, ReasonBasicAuth, rejectReasonOfErr(t, err))
	require.NotContains(t, err.Error(), `"x"`, "the password never reaches logs")
}

func rejectReasonOfErr(t *testing.T, err error) Reason {
	t.Helper()
	var ae *Error
	require.ErrorAs(t, err, &ae)
	return ae.Reason
}

// TestBasicAuthUnknownUserTiming: with bcrypt users, an unknown user costs
// a bcrypt comparison too (at least as expensive as a real user's).
func TestBasicAuthUnknownUserTiming(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), 8)
	require.NoError(t, err)
	cs := mustCompile(t, Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "a", Password: string(h)}}}})
	require.NotNil(t, cs.basic.dummy.bcrypt)
	cost, err := bcrypt.Cost(cs.basic.dummy.bcrypt)
	require.NoError(t, err)
	require.Equal(t, 8, cost)
	measure := func(user string) time.Duration {
		start := time.Now()
		for range 3 {
			_, ok := doAuth(cs, "/", start, withBasic(user, "wrong"))
			require.False(t, ok)
		}
		return time.Since(start)
	}
	known, unknown := measure("a"), measure("nobody")
	require.Greater(t, unknown, known/3, "unknown user answered much faster: known %v, unknown %v", known, unknown)
}

func TestBasicAuthCompileErrors(t *testing.T) {
	off := false
	_, err := Compile(Config{BasicAuth: &BasicAuth{}})
	requireFields(t, err, "basicAuth.users")
	_, err = Compile(Config{BasicAuth: &BasicAuth{
		Realm: `a"b`,
		Users: []BasicAuthUser{
			{Username: "a:b", Password: "x"},
			{Username: "", Password: "x"},
			{Username: "c", Password: ""},
			{Username: "d", Password: "$2a$10$tooshort"},
			{Username: "e", Password: "x"},
			{Username: "e", Password: "y"},
		},
		ExcludePaths: []string{"health", "/a/[b"},
	}})
	requireFields(t, err,
		"basicAuth.realm",
		"basicAuth.users[0].username",
		"basicAuth.users[1].username",
		"basicAuth.users[2].password",
		"basicAuth.users[3].password",
		"basicAuth.users[5].username",
		"basicAuth.excludePaths[0]",
		"basicAuth.excludePaths[1]",
	)
	// Disabled: nothing is checked and nothing enforced.
	cs, err := Compile(Config{BasicAuth: &BasicAuth{Enabled: &off}})
	require.NoError(t, err)
	require.Nil(t, cs)
}

// requireFields asserts err is a FieldErrors naming exactly the given
// fields.
func requireFields(t *testing.T, err error, fields ...string) {
	t.Helper()
	var errs FieldErrors
	require.ErrorAs(t, err, &errs)
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	require.ElementsMatch(t, fields, got, "errors: %v", errs)
}
