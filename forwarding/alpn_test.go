package forwarding

import (
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// TestHelloALPN reads the ALPN list of real ClientHellos as sent (the
// ACME TLS-ALPN-01 validation is recognised by its list, "acme-tls/1"
// alone); a hello without the extension has none.
func TestHelloALPN(t *testing.T) {
	for _, protos := range [][]string{{"acme-tls/1"}, {"h2", "http/1.1"}, {"acme-tls/10"}, nil} {
		hello := tlstest.CaptureHello(t, &tls.Config{ServerName: "a.test", NextProtos: protos, InsecureSkipVerify: true})
		info, _, err := ParseClientHello(hello, nil)
		require.NoError(t, err)
		if protos == nil {
			require.Nil(t, info.ALPN)
			continue
		}
		var list []byte
		for _, p := range protos {
			list = append(append(list, byte(len(p))), p...)
		}
		require.Equal(t, append([]byte{0, byte(len(list))}, list...), info.ALPN, "%v", protos)
	}
}
