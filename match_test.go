package smartproxy

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func mustTable(t testing.TB, routes ...Route) RouteMatcher {
	t.Helper()
	compiled, err := compileRoutes(routes, Defaults{})
	require.NoError(t, err)
	m, err := NewRouteTable(compiled)
	require.NoError(t, err)
	return m
}

func fwd(name string) *RouteBuilder { return NewRoute(name).ForwardTo("127.0.0.1:9") }

func TestRouteTableMatch(t *testing.T) {
	t.Parallel()
	m := mustTable(t,
		fwd("catch-all").Ports(443).Route(),
		fwd("wild").Ports(443).Domains("*.example.com").Route(),
		fwd("deep-wild").Ports(443).Domains("*.api.example.com").Route(),
		fwd("exact").Ports(443).Domains("www.example.com").Route(),
		fwd("suffix-glob").Ports(443).Domains("example.*").Route(),
		fwd("star").Ports(8443).Domains("*").Route(),
		fwd("prio").Ports(444).Domains("*.prio.test").Priority(10).Route(),
		fwd("prio-exact").Ports(444).Domains("a.prio.test").Route(),
		fwd("first").Ports(445).Domains("same.test").Route(),
		fwd("second").Ports(445).Domains("same.test").Route(),
		fwd("office").Ports(446).ClientIPs("10.0.0.0/8").Route(),
		fwd("office-v6").Ports(446).ClientIPs("2001:db8::/32").Route(),
		fwd("tls13").Ports(447).Domains("v.test").TLSVersions("TLSv1.3").Route(),
		fwd("tls12").Ports(447).Domains("v.test").TLSVersions("TLSv1.2").Route(),
		fwd("range").PortRange(9000, 9010).Route(),
		fwd("domain-only").Ports(448).Domains("only.test").Route(),
	)
	ip := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		port   int
		domain string
		ip     string
		tlsVer uint16
		want   string
	}{
		{443, "www.example.com", "", 0, "exact"},
		{443, "foo.example.com", "", 0, "wild"},
		{443, "a.b.example.com", "", 0, "wild"}, // '*' spans dots, as in the TS library
		{443, "x.api.example.com", "", 0, "deep-wild"},
		{443, "example.org", "", 0, "suffix-glob"},
		{443, "other.test", "", 0, "catch-all"},
		{443, "", "", 0, "catch-all"}, // no SNI: only routes without domains
		{443, "example.com", "", 0, "suffix-glob"},
		{8443, "anything.test", "", 0, "star"},
		{8443, "", "", 0, ""},               // "*" still needs an SNI
		{444, "a.prio.test", "", 0, "prio"}, // priority beats specificity
		{445, "same.test", "", 0, "first"},  // declaration order breaks ties
		{446, "", "10.1.2.3", 0, "office"},
		{446, "", "::ffff:10.1.2.3", 0, "office"}, // mapped v6 normalised
		{446, "", "2001:db8::5", 0, "office-v6"},
		{446, "", "192.0.2.1", 0, ""},
		{447, "v.test", "", tls.VersionTLS13, "tls13"},
		{447, "v.test", "", tls.VersionTLS12, "tls12"},
		{447, "v.test", "", tls.VersionTLS11, ""},
		{9005, "", "", 0, "range"},
		{9011, "", "", 0, ""},
		{448, "", "", 0, ""},
		{448, "ONLY.test", "", 0, ""}, // queries arrive normalised; see serve
		{1, "", "", 0, ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%s/%s/%x", tc.port, tc.domain, tc.ip, tc.tlsVer), func(t *testing.T) {
			q := MatchQuery{Port: tc.port, Domain: tc.domain, ClientIP: ip, TLSVersion: tc.tlsVer}
			if tc.ip != "" {
				q.ClientIP = netip.MustParseAddr(tc.ip).Unmap()
			}
			got := m.Match(&q)
			if tc.want == "" {
				require.Nil(t, got, "matched %v", got)
				return
			}
			require.NotNil(t, got)
			require.Equal(t, tc.want, got.Name)
		})
	}
}

func TestRouteTableSkipsDisabled(t *testing.T) {
	t.Parallel()
	m := mustTable(t,
		fwd("off").Ports(80).Disabled().Priority(5).Route(),
		fwd("on").Ports(80).Route(),
	)
	require.Equal(t, "on", m.Match(&MatchQuery{Port: 80}).Name)
}

func TestNormalizeDomain(t *testing.T) {
	t.Parallel()
	require.Equal(t, "www.example.com", normalizeDomain(" WWW.Example.COM. "))
	// The fast path for names already normal gives what the full one gives.
	full := func(d string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), ".")) }
	for _, d := range []string{"", ".", "a", "a.", "example.com", "Example.com", "exa mple", "a\tb",
		"\u00a0a.test", "a.test\u0085", "xn--bcher-kva.test", "[::1]", "a..", "B"} {
		require.Equal(t, full(d), normalizeDomain(d), "%q", d)
	}
	m := mustTable(t, fwd("x").Ports(443).Domains("WWW.Example.com.").Route())
	require.NotNil(t, m.Match(&MatchQuery{Port: 443, Domain: "www.example.com"}))
}

// tenThousandRoutes builds a realistic large table: exact names, wildcard
// names and a catch-all, all on port 443.
func tenThousandRoutes() []Route {
	routes := make([]Route, 0, 10001)
	for i := range 10000 {
		d := fmt.Sprintf("host%d.customer%d.example.com", i, i%100)
		if i%10 == 0 {
			d = fmt.Sprintf("*.tenant%d.example.net", i)
		}
		routes = append(routes, fwd(fmt.Sprintf("r%d", i)).Ports(443).Domains(d).Route())
	}
	return append(routes, fwd("fallback").Ports(443).Route())
}

func BenchmarkMatch10kRoutes(b *testing.B) {
	m := mustTable(b, tenThousandRoutes()...)
	queries := []MatchQuery{
		{Port: 443, Domain: "host4567.customer67.example.com"},
		{Port: 443, Domain: "app.tenant5670.example.net"},
		{Port: 443, Domain: "unknown.example.org"},
	}
	for _, q := range queries {
		b.Run(q.Domain, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if m.Match(&q) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

func TestMatch10kRoutesAllocatesNothing(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	m := mustTable(t, tenThousandRoutes()...)
	q := MatchQuery{Port: 443, Domain: "a.b.tenant990.example.net"}
	require.Equal(t, "r990", m.Match(&q).Name)
	allocs := testing.AllocsPerRun(100, func() { m.Match(&q) })
	require.Zero(t, allocs)
}
