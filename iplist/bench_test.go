package iplist

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// benchPatterns builds n mixed patterns: exact v4/v6 addresses, CIDRs of
// varied lengths, v4/v6 ranges and a few non-contiguous ?-globs. Everything
// stays inside 10.0.0.0/8, 172.16.0.0/12 and 2001:db8::/32 so that 8.8.8.8
// is a guaranteed miss that also has to scan every glob.
func benchPatterns(n int) []string {
	r := rand.New(rand.NewPCG(1, 2))
	v4 := func() string { return fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256)) }
	v6 := func() string { return fmt.Sprintf("2001:db8:%x:%x::%x", r.IntN(65536), r.IntN(65536), r.IntN(65536)) }
	ps := make([]string, 0, n)
	for i := 0; len(ps) < n; i++ {
		switch i % 50 {
		case 0:
			ps = append(ps, fmt.Sprintf("172.1?.?.%d", r.IntN(256))) // 1% globs
		case 1:
			ps = append(ps, fmt.Sprintf("172.2?.1?.%d", r.IntN(256))) // 1% globs
		case 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16:
			ps = append(ps, fmt.Sprintf("%s/%d", v4(), 16+r.IntN(15))) // 30% v4 CIDR /16-/30
		case 17, 18, 19:
			ps = append(ps, fmt.Sprintf("%s/%d", v6(), 48+r.IntN(73))) // 6% v6 CIDR
		case 20, 21, 22, 23, 24, 25:
			a := v4()
			b := netip.MustParseAddr(a)
			for range 1 + r.IntN(200) {
				b = b.Next()
			}
			ps = append(ps, a+"-"+b.String()) // 12% v4 ranges
		case 26, 27:
			a := v6()
			b := netip.MustParseAddr(a)
			for range 1 + r.IntN(200) {
				b = b.Next()
			}
			ps = append(ps, a+"-"+b.String()) // 4% v6 ranges
		case 28, 29, 30, 31, 32, 33, 34, 35:
			ps = append(ps, v6()) // 16% exact v6
		default:
			ps = append(ps, v4()) // 30% exact v4
		}
	}
	return ps
}

func benchList(n int) *List {
	l, err := Parse(benchPatterns(n))
	if err != nil {
		panic(err)
	}
	return l
}

func BenchmarkContains(b *testing.B) {
	ps := benchPatterns(b1000)
	l := benchList(b1000)
	exact4 := netip.MustParseAddr(ps[len(ps)-1]) // last pattern is an exact v4
	exact6 := netip.MustParseAddr(ps[28])
	rangeLo, _, _ := strings.Cut(ps[20], "-")
	// An address matched only by the first glob, "172.1?.?.N".
	globHit := netip.MustParseAddr(strings.ReplaceAll(ps[0], "?", "5"))
	// The worst miss: it passes the per-octet glob prefilter (15 fits
	// "1?" in both middle positions, N is the last octet of a
	// "172.2?.1?.N" glob) yet no glob matches, so every glob is scanned.
	_, n, _ := strings.Cut(ps[1], "1?.")
	globMiss := netip.MustParseAddr("172.15.15." + n)
	cases := []struct {
		name string
		ip   netip.Addr
		want bool
	}{
		{"hit/exact-v4", exact4, true},
		{"hit/exact-v4-mapped", netip.AddrFrom16(exact4.As16()), true},
		{"hit/cidr-v4", netip.MustParsePrefix(ps[5]).Masked().Addr().Next(), true},
		{"hit/range-v4", netip.MustParseAddr(rangeLo).Next(), true},
		{"hit/glob-v4", globHit, true},
		{"hit/exact-v6", exact6, true},
		{"miss/v4", netip.MustParseAddr("8.8.8.8"), false},
		{"miss/v4-glob-scan", globMiss, false},
		{"miss/v6", netip.MustParseAddr("2001:db9::1"), false},
	}
	for _, c := range cases {
		if got := l.Contains(c.ip); got != c.want {
			b.Fatalf("%s: Contains(%s) = %v, want %v", c.name, c.ip, got, c.want)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Contains(c.ip)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	ps := benchPatterns(b1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(ps); err != nil {
			b.Fatal(err)
		}
	}
}
