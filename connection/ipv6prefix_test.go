package connection

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// IPv6 clients are counted per /64 by default: addresses of one /64 share
// the per-IP limit, the next /64 is another client. Refusals still name
// the real address; metrics name the prefix.
func TestIPv6ClientsLimitedPerPrefix(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: 2})
	a1, a2 := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2::2")
	same := netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff")
	other := netip.MustParseAddr("2001:db8:1:3::1")
	r1, r2 := mustOpen(t, m, a1), mustOpen(t, m, a2)
	_, err := m.Open(ap(same, 1), 443, newCloser())
	var le *LimitError
	require.True(t, errors.As(err, &le), "a third connection from the same /64: %v", err)
	require.Equal(t, ReasonIPLimit, le.Reason)
	require.Equal(t, same, le.IP)
	r3 := mustOpen(t, m, other)
	require.Equal(t, 2, m.IPActive(netip.MustParseAddr("2001:db8:1:2::99")))
	snap := m.Snapshot()
	require.Equal(t, 2, snap.ByIP["2001:db8:1:2::/64"])
	require.Equal(t, 1, snap.ByIP["2001:db8:1:3::/64"])
	for _, r := range []*Record{r1, r2, r3} {
		m.Close(r)
	}
	require.Equal(t, 0, m.IPActive(a1))
}

// IPv6PrefixLen 128 counts every address on its own; IPv4 (and IPv4-mapped
// IPv6) clients are always per address.
func TestIPv6PrefixLenPerAddress(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: 1, IPv6PrefixLen: 128})
	var recs []*Record
	for _, s := range []string{"2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2"} {
		recs = append(recs, mustOpen(t, m, netip.MustParseAddr(s)))
	}
	_, err := m.Open(ap(netip.MustParseAddr("::ffff:192.0.2.1"), 1), 443, newCloser())
	require.True(t, isReason(err, ReasonIPLimit), "mapped 192.0.2.1 is 192.0.2.1: %v", err)
	require.Equal(t, 1, m.Snapshot().ByIP["2001:db8::1"])
	for _, r := range recs {
		m.Close(r)
	}
	_, err = NewManager(Config{IPv6PrefixLen: 129})
	require.ErrorContains(t, err, "IPv6PrefixLen 129")
}

// A route's per-IP limit groups IPv6 clients the same way.
func TestRouteIPLimitPerIPv6Prefix(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1})
	lim := RouteLimits{MaxConnectionsPerIP: 1}
	r1 := mustOpen(t, m, netip.MustParseAddr("2001:db8:9:9::1"))
	require.NoError(t, m.AssignRouteLimits(r1, "r", "", lim))
	r2 := mustOpen(t, m, netip.MustParseAddr("2001:db8:9:9::2"))
	err := m.AssignRouteLimits(r2, "r", "", lim)
	require.True(t, isReason(err, ReasonRouteIPLimit), "same /64 on the route: %v", err)
	r3 := mustOpen(t, m, netip.MustParseAddr("2001:db8:9:a::1"))
	require.NoError(t, m.AssignRouteLimits(r3, "r", "", lim))
	for _, r := range []*Record{r1, r2, r3} {
		m.Close(r)
	}
}

// IPv6 addresses whose /64 is not one host are counted per address:
// link-local (a whole LAN shares fe80::/64), loopback, and NAT64 (each
// address is an IPv4 client).
func TestIPv6PerAddressRanges(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: 1})
	var recs []*Record
	for _, s := range []string{"fe80::1", "fe80::2", "64:ff9b::192.0.2.1", "64:ff9b::192.0.2.2", "::1"} {
		recs = append(recs, mustOpen(t, m, netip.MustParseAddr(s)))
	}
	snap := m.Snapshot()
	require.Equal(t, 1, snap.ByIP["fe80::2"])
	require.Equal(t, 1, snap.ByIP["64:ff9b::c000:201"])
	for _, r := range recs {
		m.Close(r)
	}
	require.Equal(t, netip.MustParseAddr("2001:db8::"), LimitKey(netip.MustParseAddr("2001:db8::5"), 0))
	require.Equal(t, netip.MustParseAddr("2001:db8::5"), LimitKey(netip.MustParseAddr("2001:db8::5"), 128))
	require.Equal(t, netip.MustParseAddr("192.0.2.1"), LimitKey(netip.MustParseAddr("192.0.2.1"), 64))
}
