package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A nil *Checker imposes nothing.
func TestNilChecker(t *testing.T) {
	c, err := Compile(Config{})
	require.NoError(t, err)
	require.Nil(t, c)
	require.False(t, c.PathDependent())
	c.SetIPv6PrefixLen(128) // no-op, no panic
	w := httptest.NewRecorder()
	require.NoError(t, c.Check(w, httptest.NewRequest(http.MethodGet, "/", nil), testClient, time.Now()))
	require.Equal(t, http.StatusOK, w.Code)
}

// TestCompileWithDefaults: a Checker compiled on top of defaults shares
// their authentication and gets its own rate budget; a part set with
// Enabled false switches the default off.
func TestCompileWithDefaults(t *testing.T) {
	def := mustCompile(t, Config{
		BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}},
		RateLimit: &RateLimit{MaxRequests: 1, Window: 60},
	})
	off := false
	a, err := CompileWithDefaults(def, Config{})
	require.NoError(t, err)
	b, err := CompileWithDefaults(def, Config{BasicAuth: &BasicAuth{Enabled: &off}})
	require.NoError(t, err)
	require.Same(t, def.basic, a.basic, "auth shared with the defaults")
	require.Nil(t, b.basic, "opting out of a default block")
	require.NotSame(t, def.rate, a.rate, "each Checker has its own rate budget")
	require.Equal(t, http.StatusOK, doRate(b, testClient, "/", testNow, nil).Code)
	require.Equal(t, http.StatusOK, doRate(a, testClient, "/", testNow, withBasic("u", "p")).Code)
	require.Equal(t, http.StatusTooManyRequests, doRate(a, testClient, "/", testNow, withBasic("u", "p")).Code)
}

func TestPathDependent(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want bool
	}{
		{Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 1}}, false},
		{Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 1, KeyBy: "path"}}, true},
		{Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}, false},
		{Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}, ExcludePaths: []string{"/h"}}}, true},
		{Config{JWTAuth: &JWTAuth{Secret: "s", Algorithm: []string{"HS256"}, ExcludePaths: []string{"/h"}}}, true},
	} {
		require.Equal(t, c.want, mustCompile(t, c.cfg).PathDependent(), "%+v", c.cfg)
	}
}

// TestMayBlock: a JWKS fetch and bcrypt hashes may block Check's caller; plaintext passwords,
// a JWT secret and a rate limit do not.
func TestMayBlock(t *testing.T) {
	require.False(t, (*Checker)(nil).MayBlock())
	for _, c := range []struct {
		cfg  Config
		want bool
	}{
		{Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 1}}, false},
		{Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}, false},
		{Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"},
			{Username: "b", Password: bcryptHash(t, "p")}}}}, true},
		{Config{JWTAuth: &JWTAuth{Secret: "s", Algorithm: []string{"HS256"}}}, false},
		{Config{JWTAuth: &JWTAuth{JWKSURL: "https://idp.example/jwks", Algorithm: []string{"RS256"}}}, true},
	} {
		require.Equal(t, c.want, mustCompile(t, c.cfg).MayBlock(), "%+v", c.cfg)
	}
}

func TestErrorsAndWriteTooManyRequests(t *testing.T) {
	e := &Error{Reason: ReasonBasicAuth, Err: errNoCredentials}
	require.Equal(t, "request refused: basic-auth: no credentials", e.Error())
	require.Equal(t, "basic-auth", e.RejectReason())
	require.ErrorIs(t, e, errNoCredentials)
	require.Equal(t, "request refused: http-rate-limit", (&Error{Reason: ReasonRateLimit}).Error())

	_, err := Compile(Config{BasicAuth: &BasicAuth{}, RateLimit: &RateLimit{MaxRequests: 1}})
	require.EqualError(t, err, "basicAuth.users: at least one user is required when basicAuth is enabled; rateLimit.window: must be > 0 seconds, got 0")
	var fe *FieldError
	require.ErrorAs(t, err, &fe, "each mistake is reachable with errors.As")
	require.Equal(t, "basicAuth.users", fe.Field)

	w := httptest.NewRecorder()
	WriteTooManyRequests(w, 1001*time.Millisecond, "")
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	require.Equal(t, "2", w.Header().Get("Retry-After"), "rounded up")
	require.Contains(t, w.Body.String(), "Too Many Requests")
}
