package iplist

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// refContains is a deliberately naive matcher, written independently of
// the compiled representation, used to cross-check Contains.
func refContains(patterns []string, ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		switch {
		case p == "*":
			return true
		case strings.Contains(p, "/"):
			pfx := netip.MustParsePrefix(p)
			if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
				if ip.Is4() && pfx.Contains(netip.AddrFrom16(ip.As16())) {
					return true
				}
			} else if pfx.Contains(ip) {
				return true
			}
		case strings.Contains(p, "-"):
			lo, hi, _ := strings.Cut(p, "-")
			a := netip.MustParseAddr(strings.TrimSpace(lo)).Unmap()
			b := netip.MustParseAddr(strings.TrimSpace(hi)).Unmap()
			if a.Is4() == ip.Is4() && a.Compare(ip) <= 0 && ip.Compare(b) <= 0 {
				return true
			}
		case strings.ContainsAny(p, "*?"):
			for strings.Count(p, ".") < 3 {
				p += ".*"
			}
			// For 4-field globs, whole-string shell matching is the
			// documented semantics.
			if ok, _ := path.Match(p, ip.String()); ok && ip.Is4() {
				return true
			}
		default:
			if netip.MustParseAddr(p).Unmap() == ip {
				return true
			}
		}
	}
	return false
}

func TestListMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	// A small octet alphabet makes hits, edges and overlaps likely.
	octets := []int{0, 1, 2, 5, 9, 10, 11, 19, 25, 99, 100, 127, 128, 200, 250, 254, 255}
	octet := func() int { return octets[r.IntN(len(octets))] }
	v4 := func() string { return fmt.Sprintf("10.%d.%d.%d", octet()%4, octet(), octet()) }
	v6 := func() string { return fmt.Sprintf("2001:db8::%x:%x", octet()%4, octet()) }
	globFields := []string{"*", "?", "1?", "?5", "2*", "*9", "1*0", "10", "0", "255", "2?5"}
	glob := func() string {
		f := func() string { return globFields[r.IntN(len(globFields))] }
		switch r.IntN(3) {
		case 0:
			return fmt.Sprintf("10.%d.%s.%s", octet()%4, f(), f())
		case 1:
			return fmt.Sprintf("10.%s.%s.*", f(), f())
		default:
			return fmt.Sprintf("%s.%d.*", f(), octet()%4)
		}
	}
	ordered := func(a, b string) (string, string) {
		if netip.MustParseAddr(b).Less(netip.MustParseAddr(a)) {
			return b, a
		}
		return a, b
	}
	pattern := func() string {
		switch r.IntN(9) {
		case 0:
			return v4()
		case 1:
			return v6()
		case 2:
			return fmt.Sprintf("%s/%d", v4(), 8+r.IntN(25))
		case 3:
			return fmt.Sprintf("%s/%d", v6(), 96+r.IntN(33))
		case 4:
			a, b := ordered(v4(), v4())
			return a + "-" + b
		case 5:
			a, b := ordered(v6(), v6())
			return a + " - " + b
		case 6:
			return "::ffff:" + v4()
		case 7:
			return fmt.Sprintf("::ffff:%s/%d", v4(), 100+r.IntN(29))
		default:
			return glob()
		}
	}
	input := func() netip.Addr {
		switch r.IntN(5) {
		case 0:
			return netip.MustParseAddr(v6())
		case 1:
			return netip.MustParseAddr("::ffff:" + v4())
		default:
			return netip.MustParseAddr(v4())
		}
	}

	for range 300 {
		var patterns []string
		for range 1 + r.IntN(40) {
			p := pattern()
			if _, err := Parse([]string{p}); err != nil {
				continue // e.g. a glob octet that matches nothing
			}
			patterns = append(patterns, p)
		}
		l, err := Parse(patterns)
		require.NoError(t, err)
		for range 200 {
			ip := input()
			require.Equal(t, refContains(patterns, ip), l.Contains(ip), "patterns %q, ip %s", patterns, ip)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", "10.0.0.0/8", "2001:db8::/32",
		"192.168.1.77/24", "::ffff:10.0.0.0/104", "10.0.0.1-10.0.0.50", "2001:db8::1-2001:db8::ff",
		"192.168.1.*", "10.*.*.1", "10.?.?.1", "10.*", "*", "*.*.*.*", "10.0.0.1?,1.2.3.4/32",
		"10.0.0.300", "fe80::1%eth0", "10.0.0.50-10.0.0.1", "-", "/", "?", "1-2", "::/0", " , ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		patterns := strings.Split(s, ",")
		l, err := Parse(patterns)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "ip pattern \"") {
				t.Fatalf("error %q does not quote the pattern", err)
			}
			return
		}
		if l.Len() != len(patterns) {
			t.Fatalf("Len %d, want %d", l.Len(), len(patterns))
		}
		// Probe with addresses derived from the input, so the fuzzer can
		// steer them.
		var b [16]byte
		copy(b[:], s)
		l.Contains(netip.AddrFrom16(b))
		l.Contains(netip.AddrFrom4([4]byte(b[:4])))
		l.Contains(netip.AddrFrom16(b).WithZone("z"))
		l.Contains(netip.Addr{})
		for _, p := range patterns {
			p = strings.TrimSpace(p)
			if a, err := netip.ParseAddr(p); err == nil && !l.Contains(a) {
				t.Fatalf("list %q does not contain its own address %s", s, a)
			}
			if pfx, err := netip.ParsePrefix(p); err == nil && !l.Contains(pfx.Masked().Addr()) {
				t.Fatalf("list %q does not contain the base of its prefix %s", s, pfx)
			}
		}
	})
}

const b1000 = 1000
