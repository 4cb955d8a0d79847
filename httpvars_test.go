package smartproxy

import (
	"crypto/tls"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// forwardedValueRef is forwardedValue as it was written with a
// strings.Builder, the reference the allocation-free version must match.
func forwardedValueRef(pr *proxyReq) string {
	var b strings.Builder
	if ip := pr.rc.ClientIP; ip.IsValid() {
		b.WriteString("for=")
		if ip.Is6() {
			b.WriteString(`"[` + ip.String() + `]"`)
		} else {
			b.WriteString(ip.String())
		}
		b.WriteByte(';')
	}
	if pr.in.Host != "" {
		b.WriteString("host=" + strconv.Quote(pr.in.Host) + ";")
	}
	if pr.in.TLS != nil {
		b.WriteString("proto=https")
	} else {
		b.WriteString("proto=http")
	}
	return b.String()
}

func TestForwardedValueMatchesReference(t *testing.T) {
	t.Parallel()
	ips := []netip.Addr{
		{}, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("203.0.113.250"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
		netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("fe80::1%eth0"),
	}
	hosts := []string{"", "a.test", "rw.test:8080", "[::1]:443", `we"ird\host`, "ünïcode.test", "ctl\x01\x7f",
		strings.Repeat("long-label.", 30) + "test"}
	for _, ip := range ips {
		for _, host := range hosts {
			for _, tlsOn := range []bool{false, true} {
				in := &http.Request{Host: host}
				if tlsOn {
					in.TLS = &tls.ConnectionState{}
				}
				pr := &proxyReq{in: in, rc: RouteContext{ClientIP: ip}}
				require.Equal(t, forwardedValueRef(pr), forwardedValue(pr), "ip %v host %q tls %v", ip, host, tlsOn)
			}
		}
	}
}

// TestSetForwardedMatchesSetXForwarded: the forwarding headers are what
// httputil's SetXForwarded plus X-Real-IP and Forwarded set by hand give,
// and appending to one of them does not touch the others (they share a
// backing array).
func TestSetForwardedMatchesSetXForwarded(t *testing.T) {
	t.Parallel()
	for _, remote := range []string{"127.0.0.1:5555", "[2001:db8::7]:80", "not-an-addr", ""} {
		for _, tlsOn := range []bool{false, true} {
			in := &http.Request{Host: "rw.test:8080", RemoteAddr: remote, Header: http.Header{}}
			if tlsOn {
				in.TLS = &tls.ConnectionState{}
			}
			pr := &proxyReq{in: in, rc: RouteContext{ClientIP: netip.MustParseAddr("192.0.2.1")}}
			ref := &httputil.ProxyRequest{In: in, Out: &http.Request{Header: http.Header{"A": {"b"}}}}
			ref.SetXForwarded()
			if xff := ref.Out.Header["X-Forwarded-For"]; xff != nil {
				ref.Out.Header.Set("X-Real-IP", xff[0])
			}
			ref.Out.Header.Set("Forwarded", forwardedValueRef(pr))
			out := &http.Request{Header: http.Header{"A": {"b"}}}
			setForwarded(out, in, pr)
			require.Equal(t, ref.Out.Header, out.Header, "remote %q tls %v", remote, tlsOn)

			want := out.Header.Clone()
			out.Header.Add("X-Forwarded-Host", "second")
			out.Header.Add("X-Forwarded-For", "second")
			require.Equal(t, want["X-Forwarded-Proto"], out.Header["X-Forwarded-Proto"])
			require.Equal(t, want["X-Real-Ip"], out.Header["X-Real-Ip"], "X-Real-IP shares X-Forwarded-For's value")
			require.Equal(t, want["Forwarded"], out.Header["Forwarded"])
			require.Equal(t, append(want["X-Forwarded-Host"], "second"), out.Header["X-Forwarded-Host"])
		}
	}
}

func TestForwardedAllocations(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	in := &http.Request{Host: "rw.test:8080", RemoteAddr: "127.0.0.1:5555", Header: http.Header{}}
	pr := &proxyReq{in: in, rc: RouteContext{ClientIP: netip.MustParseAddr("2001:db8::7")}}
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = forwardedValue(pr) }), "forwardedValue: only the string")
	out := &http.Request{Header: make(http.Header, 8)}
	require.Equal(t, 2.0, testing.AllocsPerRun(100, func() { setForwarded(out, in, pr) }),
		"setForwarded: one array for the four values, and the Forwarded string")
}

// TestAppendQuotedHost: the fast quoting gives what strconv.AppendQuote gives, for plain hosts
// and for those it must escape.
func TestAppendQuotedHost(t *testing.T) {
	for _, h := range []string{"a.test", "a.test:8080", "[::1]:80", "", "a\"b", "a\\b", "caf\xe9", "café", "a\tb", "~x"} {
		require.Equal(t, string(strconv.AppendQuote(nil, h)), string(appendQuotedHost(nil, h)), "%q", h)
	}
}

// TestAppendQuotedHostEveryByte: every single byte is quoted as strconv.AppendQuote quotes it,
// alone and inside a host (the verbatim table is checked whole, not by example).
func TestAppendQuotedHostEveryByte(t *testing.T) {
	t.Parallel()
	for c := range 256 {
		for _, h := range []string{string([]byte{byte(c)}), "a" + string([]byte{byte(c)}) + ".test"} {
			require.Equal(t, string(strconv.AppendQuote(nil, h)), string(appendQuotedHost(nil, h)), "%q", h)
		}
	}
}
