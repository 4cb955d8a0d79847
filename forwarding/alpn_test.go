package forwarding

import (
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// TestOffersProtocol reads the ALPN list of real ClientHellos: the ACME
// TLS-ALPN-01 validation offers "acme-tls/1" alone.
func TestOffersProtocol(t *testing.T) {
	for _, tc := range []struct {
		protos []string
		ask    string
		want   bool
	}{
		{[]string{"acme-tls/1"}, "acme-tls/1", true},
		{[]string{"h2", "http/1.1"}, "http/1.1", true},
		{[]string{"h2", "http/1.1"}, "acme-tls/1", false},
		{[]string{"acme-tls/10"}, "acme-tls/1", false},
		{nil, "acme-tls/1", false},
	} {
		hello := tlstest.CaptureHello(t, &tls.Config{ServerName: "a.test", NextProtos: tc.protos, InsecureSkipVerify: true})
		info, _, err := ParseClientHello(hello, nil)
		require.NoError(t, err)
		require.Equal(t, tc.want, info.OffersProtocol(tc.ask), "%v offers %q", tc.protos, tc.ask)
		require.Equal(t, tc.protos == nil, info.ALPN == nil)
	}
	// Malformed lists offer nothing and do not fail the parse: crypto/tls
	// refuses them in the handshake.
	for _, alpn := range [][]byte{{0, 5, 3, 'a', 'b'}, {0, 2, 0, 0}, {0}, {0, 1, 1, 'x', 9}} {
		info := ClientHelloInfo{ALPN: alpn}
		require.False(t, info.OffersProtocol("x"), "%v", alpn)
	}
	info := ClientHelloInfo{ALPN: []byte{0, 2, 1, 'x'}}
	require.True(t, info.OffersProtocol("x"))
}
