package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gosmartproxy/smartproxy/schema"
)

// BenchmarkCheck measures an admitted request: basic auth with a
// plaintext password, and an HS256 JWT (parse, verify, claims).
func BenchmarkCheck(b *testing.B) {
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name string
		sec  Config
		auth string
	}{
		{"basic-plaintext", Config{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p4ssw0rd"}}}}, ""},
		{"jwt-HS256", Config{JWTAuth: &JWTAuth{Secret: secret, Algorithm: schema.StringList{"HS256"}}},
			"Bearer " + sign(b, jwt.SigningMethodHS256, []byte(secret), claims(), "")},
		{"ratelimit-ip", Config{RateLimit: &RateLimit{MaxRequests: 1 << 30, Window: 60}}, ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			cs := mustCompile(b, c.sec)
			r := httptest.NewRequest(http.MethodGet, "/api", nil)
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			} else {
				r.SetBasicAuth("u", "p4ssw0rd")
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				if cs.Check(w, r, testClient, testNow) != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
