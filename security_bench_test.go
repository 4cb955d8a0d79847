package smartproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/iplist"
)

// BenchmarkSecurityCheck measures DefaultSecurityChecker.CheckConnection
// against 1,000-entry allow and block lists (mixed exact, CIDR and glob
// patterns) for an admitted client: both lists are searched.
func BenchmarkSecurityCheck(b *testing.B) {
	var allow, block []string
	for i := range 1000 {
		switch i % 3 {
		case 0:
			allow = append(allow, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))
			block = append(block, fmt.Sprintf("192.168.%d.%d", i/256, i%256))
		case 1:
			allow = append(allow, fmt.Sprintf("2001:db8:%x::/48", i))
			block = append(block, fmt.Sprintf("172.16.%d.*", i%256))
		default:
			allow = append(allow, fmt.Sprintf("11.%d.%d.1-11.%d.%d.9", i/256, i%256, i/256, i%256))
			block = append(block, fmt.Sprintf("2001:db9::%x", i))
		}
	}
	a, err := iplist.Parse(allow)
	require.NoError(b, err)
	bl, err := iplist.Parse(block)
	require.NoError(b, err)
	route := &Route{Name: "r", state: &routeState{allow: a, block: bl}}
	rc := &RouteContext{Route: route, RouteName: "r", ClientIP: netip.MustParseAddr("10.2.79.5")}
	var chk SecurityChecker = DefaultSecurityChecker{}
	require.NoError(b, chk.CheckConnection(rc))
	b.ReportAllocs()
	for b.Loop() {
		if chk.CheckConnection(rc) != nil {
			b.Fatal("rejected")
		}
	}
}

// BenchmarkAuthorizeHTTP measures an admitted request: basic auth with a
// plaintext password, and an HS256 JWT (parse, verify, claims).
func BenchmarkAuthorizeHTTP(b *testing.B) {
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name string
		sec  *RouteSecurity
		auth string
	}{
		{"basic-plaintext", &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p4ssw0rd"}}}}, ""},
		{"jwt-HS256", &RouteSecurity{JWTAuth: &JWTAuth{Secret: secret, Algorithm: StringList{"HS256"}}},
			"Bearer " + sign(b, jwt.SigningMethodHS256, []byte(secret), claims(), "")},
		{"ratelimit-ip", &RouteSecurity{RateLimit: &RateLimit{MaxRequests: 1 << 30, Window: 60}}, ""},
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
				if cs.checkHTTP(w, r, testClient, testNow) != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
