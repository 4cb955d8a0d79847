package smartproxy

import (
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"
)

// TestAuditProxyProtocolTLVsResent (issue 13: "for v2 the ALPN/authority
// TLVs when known", and chains keep what the trusted sender said): a
// header received from a trusted sender with ALPN and authority TLVs is
// resent as v2 to the backend with the same client address and both
// TLVs. TestProxyProtocolChain resends as v1 and TestProxyProtocolSend
// sees the authority only from an SNI, so neither proves this.
func TestAuditProxyProtocolTLVsResent(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startPPBackend(t)
	r := NewRoute("resend").Ports(port).ForwardTo(be.addr()).Route()
	r.Action.SendProxyProtocol, r.Action.ProxyProtocolVersion = true, 2
	ppProxy(t, lp, []string{"127.0.0.1"}, r)

	c := dial(t, port)
	hdr := ppHeader(t, 2, "203.0.113.7:40000", "192.0.2.1:443",
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte("h2")},
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("a.example.com")})
	_, err := c.Write(append(hdr, "ping\n"...))
	require.NoError(t, err)
	line := ppLine(t, c)
	require.True(t, strings.HasPrefix(line, "v2 src=203.0.113.7:40000 dst=192.0.2.1:443"), line)
	require.Contains(t, line, " tlv1=h2", "the ALPN TLV is passed on")
	require.Contains(t, line, " tlv2=a.example.com", "the authority TLV is passed on")
	require.Equal(t, "ping", ppLine(t, c), "the client's bytes follow the header")
}
