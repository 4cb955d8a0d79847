package auth_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gosmartproxy/smartproxy/auth"
)

var client = netip.MustParseAddr("192.0.2.10")

// ExampleBasicAuth protects everything but /health with HTTP Basic
// credentials. A refused request has been answered with a 401 already;
// the *auth.Error says why.
func ExampleBasicAuth() {
	c, err := auth.Compile(auth.Config{BasicAuth: &auth.BasicAuth{
		Realm:        "Admin",
		Users:        []auth.BasicAuthUser{{Username: "alice", Password: "s3cret"}},
		ExcludePaths: []string{"/health"},
	}})
	if err != nil {
		panic(err)
	}
	for _, tc := range []struct{ path, user, pass string }{
		{"/admin", "alice", "s3cret"},
		{"/admin", "alice", "guess"},
		{"/admin", "", ""},
		{"/health", "", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.user != "" {
			r.SetBasicAuth(tc.user, tc.pass)
		}
		w := httptest.NewRecorder()
		err := c.Check(w, r, client, time.Now())
		var refused *auth.Error
		if errors.As(err, &refused) {
			fmt.Println(tc.path, w.Code, refused.Reason, w.Header().Get("WWW-Authenticate"))
			continue
		}
		fmt.Println(tc.path, "admitted")
	}
	// Output:
	// /admin admitted
	// /admin 401 basic-auth Basic realm="Admin", charset="UTF-8"
	// /admin 401 auth-required Basic realm="Admin", charset="UTF-8"
	// /health admitted
}

// ExampleJWTAuth accepts HS256 tokens from one issuer. A token must carry
// an expiry; 30 seconds of clock skew are tolerated by default.
func ExampleJWTAuth() {
	secret := []byte("a-secret-of-at-least-32-bytes-long!")
	c, err := auth.Compile(auth.Config{JWTAuth: &auth.JWTAuth{
		Secret:    string(secret),
		Algorithm: []string{"HS256"},
		Issuer:    "https://issuer.example",
	}})
	if err != nil {
		panic(err)
	}
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	token := func(iss string, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": iss, "exp": exp.Unix()}).SignedString(secret)
		if err != nil {
			panic(err)
		}
		return s
	}
	for _, tok := range []string{
		token("https://issuer.example", now.Add(time.Hour)),
		token("https://issuer.example", now.Add(-time.Hour)),
		token("https://evil.example", now.Add(time.Hour)),
	} {
		r := httptest.NewRequest(http.MethodGet, "/api", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		if err := c.Check(w, r, client, now); err != nil {
			fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"))
			continue
		}
		fmt.Println("admitted")
	}
	// Output:
	// admitted
	// 401 Bearer realm="Restricted", error="invalid_token"
	// 401 Bearer realm="Restricted", error="invalid_token"
}

// ExampleRateLimit allows two requests a minute per client IP; the third
// gets a 429 whose Retry-After says when one more would be admitted.
func ExampleRateLimit() {
	c, err := auth.Compile(auth.Config{RateLimit: &auth.RateLimit{MaxRequests: 2, Window: 60}})
	if err != nil {
		panic(err)
	}
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for range 3 {
		w := httptest.NewRecorder()
		err := c.Check(w, httptest.NewRequest(http.MethodGet, "/", nil), client, now)
		fmt.Println(w.Code, w.Header().Get("Retry-After"), err)
	}
	// Output:
	// 200  <nil>
	// 200  <nil>
	// 429 90 request refused: http-rate-limit
}

// ExampleCompile shows how mistakes are reported: one FieldError per
// field, named from the route's security block.
func ExampleCompile() {
	_, err := auth.Compile(auth.Config{JWTAuth: &auth.JWTAuth{Secret: "s", Algorithm: []string{"none"}}})
	fmt.Println(err)
	// Output:
	// jwtAuth.algorithm[0]: "none" is never accepted
}
