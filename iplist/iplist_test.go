package iplist

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListForms(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		match    []string
		noMatch  []string
	}{
		{
			name:     "exact v4",
			patterns: []string{"10.0.0.1"},
			match:    []string{"10.0.0.1", "::ffff:10.0.0.1"},
			noMatch:  []string{"10.0.0.2", "10.0.0.0", "::a00:1", "0.0.0.0"},
		},
		{
			name:     "exact v6",
			patterns: []string{"2001:db8::1"},
			match:    []string{"2001:db8::1", "2001:0db8:0000::0001", "2001:db8::1%eth0"},
			noMatch:  []string{"2001:db8::2", "::1", "0.0.0.1"},
		},
		{
			name:     "exact mapped pattern is IPv4",
			patterns: []string{"::ffff:10.0.0.1"},
			match:    []string{"10.0.0.1", "::ffff:10.0.0.1"},
			noMatch:  []string{"10.0.0.2", "::10.0.0.1"},
		},
		{
			name:     "whitespace trimmed",
			patterns: []string{"  10.0.0.1\t", "\n10.1.0.0/16 ", " 10.2.0.1 - 10.2.0.3 ", " 10.3.*.* "},
			match:    []string{"10.0.0.1", "10.1.200.3", "10.2.0.2", "10.3.4.5"},
			noMatch:  []string{"10.2.0.4", "10.4.0.0"},
		},
		{
			name:     "cidr v4",
			patterns: []string{"10.0.0.0/8", "192.168.1.0/24", "172.16.5.4/32"},
			match:    []string{"10.0.0.0", "10.255.255.255", "192.168.1.0", "192.168.1.255", "172.16.5.4", "::ffff:10.9.9.9"},
			noMatch:  []string{"11.0.0.0", "9.255.255.255", "192.168.2.0", "192.168.0.255", "172.16.5.5"},
		},
		{
			name:     "cidr host bits masked",
			patterns: []string{"192.168.1.77/24", "2001:db8::dead:beef/112"},
			match:    []string{"192.168.1.0", "192.168.1.255", "2001:db8::dead:0", "2001:db8::dead:ffff"},
			noMatch:  []string{"192.168.2.0", "2001:db8::beef:0"},
		},
		{
			name:     "cidr v4 /0",
			patterns: []string{"0.0.0.0/0"},
			match:    []string{"0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4"},
			noMatch:  []string{"::", "::1", "2001:db8::1"},
		},
		{
			name:     "cidr v6",
			patterns: []string{"2001:db8::/32", "fe80::/10"},
			match:    []string{"2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1", "febf::1"},
			noMatch:  []string{"2001:db9::", "2001:db7:ffff::", "fec0::1", "32.1.13.184"},
		},
		{
			name:     "cidr v6 /0 does not match IPv4",
			patterns: []string{"::/0"},
			match:    []string{"::", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::1"},
			noMatch:  []string{"1.2.3.4", "::ffff:1.2.3.4"},
		},
		{
			name:     "cidr v6 /128",
			patterns: []string{"2001:db8::5/128"},
			match:    []string{"2001:db8::5"},
			noMatch:  []string{"2001:db8::4", "2001:db8::6"},
		},
		{
			name:     "cidr mapped prefix is IPv4",
			patterns: []string{"::ffff:10.0.0.0/104"},
			match:    []string{"10.0.0.1", "10.255.0.0", "::ffff:10.1.1.1"},
			noMatch:  []string{"11.0.0.0"},
		},
		{
			name:     "range v4",
			patterns: []string{"10.0.0.1-10.0.0.50"},
			match:    []string{"10.0.0.1", "10.0.0.25", "10.0.0.50", "::ffff:10.0.0.50"},
			noMatch:  []string{"10.0.0.0", "10.0.0.51", "10.0.1.1"},
		},
		{
			name:     "range v4 across octets",
			patterns: []string{"10.0.0.250-10.0.1.5"},
			match:    []string{"10.0.0.255", "10.0.1.0", "10.0.1.5"},
			noMatch:  []string{"10.0.0.249", "10.0.1.6"},
		},
		{
			name:     "range single address",
			patterns: []string{"10.0.0.7-10.0.0.7"},
			match:    []string{"10.0.0.7"},
			noMatch:  []string{"10.0.0.6", "10.0.0.8"},
		},
		{
			name:     "range v6",
			patterns: []string{"2001:db8::1-2001:db8::1:0"},
			match:    []string{"2001:db8::1", "2001:db8::ffff", "2001:db8::1:0"},
			noMatch:  []string{"2001:db8::", "2001:db8::1:1", "0.0.0.1"},
		},
		{
			name:     "range mapped ends are IPv4",
			patterns: []string{"::ffff:10.0.0.1-10.0.0.3"},
			match:    []string{"10.0.0.2", "::ffff:10.0.0.3"},
			noMatch:  []string{"10.0.0.4"},
		},
		{
			name:     "glob last octet",
			patterns: []string{"192.168.1.*"},
			match:    []string{"192.168.1.0", "192.168.1.255", "::ffff:192.168.1.9"},
			noMatch:  []string{"192.168.2.1", "192.168.10.1", "92.168.1.1"},
		},
		{
			name:     "glob two octets",
			patterns: []string{"172.16.*.*"},
			match:    []string{"172.16.0.0", "172.16.255.255"},
			noMatch:  []string{"172.17.0.0", "172.15.255.255"},
		},
		{
			name:     "glob three octets",
			patterns: []string{"10.*.*.*"},
			match:    []string{"10.0.0.0", "10.255.255.255"},
			noMatch:  []string{"11.0.0.0", "100.0.0.0", "1.0.0.0"},
		},
		{
			name:     "glob all octets",
			patterns: []string{"*.*.*.*"},
			match:    []string{"0.0.0.0", "255.255.255.255"},
			noMatch:  []string{"::", "2001:db8::1"},
		},
		{
			name:     "glob shorthand trailing star",
			patterns: []string{"10.*", "192.168.*"},
			match:    []string{"10.1.2.3", "192.168.77.1"},
			noMatch:  []string{"100.1.2.3", "192.169.0.1", "1.10.0.0"},
		},
		{
			name:     "glob inner star",
			patterns: []string{"10.*.*.1"},
			match:    []string{"10.0.0.1", "10.255.3.1"},
			noMatch:  []string{"10.0.0.2", "10.0.0.11", "10.0.0.21", "11.0.0.1"},
		},
		{
			name:     "glob question marks are one digit",
			patterns: []string{"10.?.?.1"},
			match:    []string{"10.0.0.1", "10.9.9.1", "10.5.3.1"},
			noMatch:  []string{"10.10.0.1", "10.0.10.1", "10.0.0.2", "10.1.1.11"},
		},
		{
			name:     "glob partial octets",
			patterns: []string{"10.0.0.1?", "10.0.1.2*5", "10.0.2.*9"},
			match:    []string{"10.0.0.10", "10.0.0.19", "10.0.1.25", "10.0.1.205", "10.0.1.255", "10.0.2.9", "10.0.2.99", "10.0.2.249"},
			noMatch:  []string{"10.0.0.1", "10.0.0.20", "10.0.0.100", "10.0.1.2", "10.0.1.5", "10.0.1.26", "10.0.2.90"},
		},
		{
			name:     "star is everything",
			patterns: []string{"*"},
			match:    []string{"0.0.0.0", "1.2.3.4", "::", "2001:db8::1", "::ffff:1.2.3.4", "fe80::1%eth0"},
		},
		{
			name:     "star with other patterns",
			patterns: []string{"10.0.0.1", "*", "10.?.?.1"},
			match:    []string{"8.8.8.8", "2001:db8::1"},
		},
		{
			name:     "overlapping and adjacent entries",
			patterns: []string{"10.0.0.0/24", "10.0.0.128/25", "10.0.1.0-10.0.1.10", "10.0.1.11", "10.0.0.5", "10.0.3.0/24"},
			match:    []string{"10.0.0.0", "10.0.0.200", "10.0.1.10", "10.0.1.11", "10.0.3.3"},
			noMatch:  []string{"10.0.1.12", "10.0.2.255", "10.0.4.0"},
		},
		{
			name:     "extremes",
			patterns: []string{"255.255.255.255", "0.0.0.0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			match:    []string{"255.255.255.255", "0.0.0.0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			noMatch:  []string{"255.255.255.254", "0.0.0.1", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"},
		},
		{
			name:    "empty list",
			noMatch: []string{"0.0.0.0", "10.0.0.1", "::1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse(tt.patterns)
			require.NoError(t, err)
			require.Equal(t, len(tt.patterns), l.Len())
			for _, s := range tt.match {
				assert.True(t, l.Contains(netip.MustParseAddr(s)), "%v should contain %s", tt.patterns, s)
			}
			for _, s := range tt.noMatch {
				assert.False(t, l.Contains(netip.MustParseAddr(s)), "%v should not contain %s", tt.patterns, s)
			}
		})
	}
}

func TestListFamilySeparation(t *testing.T) {
	// The v4 and v6 integer spaces overlap numerically (0.0.0.1 and ::1 are
	// both "1"); make sure nothing leaks across.
	v4, err := Parse([]string{"0.0.0.0/0"})
	require.NoError(t, err)
	v6, err := Parse([]string{"::/0"})
	require.NoError(t, err)

	for _, s := range []string{"0.0.0.1", "1.2.3.4", "255.255.255.255", "::ffff:1.2.3.4"} {
		a := netip.MustParseAddr(s)
		assert.True(t, v4.Contains(a), s)
		assert.False(t, v6.Contains(a), s)
	}
	for _, s := range []string{"::1", "::1.2.3.4", "::ffff:0:0:1", "2001:db8::1", "64:ff9b::1.2.3.4"} {
		a := netip.MustParseAddr(s)
		assert.False(t, v4.Contains(a), s)
		assert.True(t, v6.Contains(a), s)
	}

	one4, err := Parse([]string{"0.0.0.1", "0.0.0.1-0.0.0.9"})
	require.NoError(t, err)
	assert.False(t, one4.Contains(netip.MustParseAddr("::1")))
	one6, err := Parse([]string{"::1", "::1-::9"})
	require.NoError(t, err)
	assert.False(t, one6.Contains(netip.MustParseAddr("0.0.0.1")))
}

func TestListMapped(t *testing.T) {
	// Every way of writing the same IPv4 address on the pattern side must
	// match every way of writing it on the input side.
	patterns := []string{"10.1.2.3", "::ffff:10.1.2.3", "::ffff:a01:203", "10.1.2.0/24", "::ffff:10.1.2.0/120", "10.1.2.3-10.1.2.3", "::ffff:10.1.2.1-::ffff:10.1.2.5", "10.1.2.*", "10.?.2.3"}
	inputs := []string{"10.1.2.3", "::ffff:10.1.2.3", "::ffff:a01:203"}
	for _, p := range patterns {
		l, err := Parse([]string{p})
		require.NoError(t, err, p)
		for _, in := range inputs {
			assert.True(t, l.Contains(netip.MustParseAddr(in)), "%s should contain %s", p, in)
		}
		assert.False(t, l.Contains(netip.MustParseAddr("10.1.3.3")), p)
		// "::10.1.2.3" is an IPv4-compatible (not mapped) address: IPv6.
		assert.False(t, l.Contains(netip.MustParseAddr("::10.1.2.3")), p)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		pattern string
		want    string // full error text
	}{
		{"", `ip pattern "": empty pattern`},
		{"   ", `ip pattern "   ": empty pattern`},
		{"10.0.0.300", `ip pattern "10.0.0.300": octet out of range`},
		{"10.0.0.1000", `ip pattern "10.0.0.1000": octet out of range`},
		{"10.0.0", `ip pattern "10.0.0": IPv4 address needs 4 octets, got 3`},
		{"10.0.0.1.2", `ip pattern "10.0.0.1.2": IPv4 address needs 4 octets, got 5`},
		{"10..0.1", `ip pattern "10..0.1": empty octet`},
		{"010.0.0.1", `ip pattern "010.0.0.1": octet has a leading zero`},
		{"example.com", `ip pattern "example.com": not an IP address, CIDR, range or glob`},
		{"2001:db8::zz", `ip pattern "2001:db8::zz": invalid IPv6 address`},
		{"2001:db8:::1", `ip pattern "2001:db8:::1": invalid IPv6 address`},
		{"fe80::1%eth0", `ip pattern "fe80::1%eth0": IPv6 zones are not allowed`},
		{"fe80::%eth0/64", `ip pattern "fe80::%eth0/64": IPv6 zones are not allowed`},
		{"10.0.0.0/33", `ip pattern "10.0.0.0/33": prefix length 33 out of range for IPv4 (max 32)`},
		{"2001:db8::/129", `ip pattern "2001:db8::/129": prefix length 129 out of range for IPv6 (max 128)`},
		{"10.0.0.0/", `ip pattern "10.0.0.0/": missing prefix length`},
		{"10.0.0.0/x", `ip pattern "10.0.0.0/x": invalid prefix length "x"`},
		{"10.0.0.0/+8", `ip pattern "10.0.0.0/+8": invalid prefix length "+8"`},
		{"10.0.0.0/8/8", `ip pattern "10.0.0.0/8/8": invalid prefix length "8/8"`},
		{"10.0.0.0/0008", `ip pattern "10.0.0.0/0008": invalid prefix length "0008"`},
		{"/8", `ip pattern "/8": empty address`},
		{"10.0.0.256/8", `ip pattern "10.0.0.256/8": octet out of range`},
		{"10.0.0.50-10.0.0.1", `ip pattern "10.0.0.50-10.0.0.1": range start is after end`},
		{"2001:db8::2-2001:db8::1", `ip pattern "2001:db8::2-2001:db8::1": range start is after end`},
		{"10.0.0.1-2001:db8::1", `ip pattern "10.0.0.1-2001:db8::1": range mixes IPv4 and IPv6`},
		{"::1-10.0.0.1", `ip pattern "::1-10.0.0.1": range mixes IPv4 and IPv6`},
		{"10.0.0.1-", `ip pattern "10.0.0.1-": range end: empty address`},
		{"-10.0.0.1", `ip pattern "-10.0.0.1": range start: empty address`},
		{"10.0.0.1-10.0.0.300", `ip pattern "10.0.0.1-10.0.0.300": range end: octet out of range`},
		{"10.0.0.1-10.0.0.2-10.0.0.3", `ip pattern "10.0.0.1-10.0.0.2-10.0.0.3": range has more than one '-'`},
		{"10.0.0.*-10.0.0.5", `ip pattern "10.0.0.*-10.0.0.5": range start: not an IP address, CIDR, range or glob`},
		{"10.0.0.3??", `ip pattern "10.0.0.3??": glob octet "3??" matches no value 0-255`},
		{"10.0.0.0?", `ip pattern "10.0.0.0?": glob octet "0?" matches no value 0-255`},
		{"10.0.300.*", `ip pattern "10.0.300.*": octet out of range`},
		{"10.0.01.*", `ip pattern "10.0.01.*": octet has a leading zero`},
		{"10.*.1", `ip pattern "10.*.1": glob has fewer than 4 octets and does not end in ".*"`},
		{"1*", `ip pattern "1*": glob has fewer than 4 octets and does not end in ".*"`},
		{"**", `ip pattern "**": glob has fewer than 4 octets and does not end in ".*"`},
		{"10.*.*.*.*", `ip pattern "10.*.*.*.*": glob has more than 4 octets`},
		{"10.*..1", `ip pattern "10.*..1": empty octet`},
		{"10.a*.0.1", `ip pattern "10.a*.0.1": invalid character in glob octet "a*"`},
		{"2001:db8::*", `ip pattern "2001:db8::*": globs are only supported for IPv4`},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			l, err := Parse([]string{"10.0.0.1", tt.pattern})
			require.Error(t, err)
			assert.Nil(t, l)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestListNil(t *testing.T) {
	var l *List
	assert.False(t, l.Contains(netip.MustParseAddr("10.0.0.1")))
	assert.False(t, l.Contains(netip.Addr{}))
	assert.Equal(t, 0, l.Len())
	assert.Equal(t, "", l.String())
}

func TestListZeroAddr(t *testing.T) {
	l, err := Parse([]string{"*", "0.0.0.0", "::"})
	require.NoError(t, err)
	assert.False(t, l.Contains(netip.Addr{}), "the zero Addr is not an address")
}

func TestListLenString(t *testing.T) {
	l, err := Parse(nil)
	require.NoError(t, err)
	require.NotNil(t, l)
	assert.Equal(t, 0, l.Len())
	assert.Equal(t, "", l.String())

	l, err = Parse([]string{" 10.0.0.1 ", "10.0.0.1", "10.0.0.0/8", "2001:db8::-2001:db8::ff", "10.?.?.1"})
	require.NoError(t, err)
	assert.Equal(t, 5, l.Len(), "duplicates count")
	assert.Equal(t, "10.0.0.1, 10.0.0.1, 10.0.0.0/8, 2001:db8::-2001:db8::ff, 10.?.?.1", l.String())
}

func TestListCompilation(t *testing.T) {
	// Contiguous globs must become intervals (binary search), not bitmap
	// globs (linear scan); overlapping intervals must be merged.
	l, err := Parse([]string{"192.168.1.*", "172.16.*.*", "11.*.*.*", "12.*", "10.0.0.1?", "10.1.?.*", "10.?.?.1", "10.?.?.1"})
	require.NoError(t, err)
	assert.Equal(t, []v4Range{
		{ip4(t, "10.0.0.10"), ip4(t, "10.0.0.19")},
		{ip4(t, "10.1.0.0"), ip4(t, "10.1.9.255")},
		{ip4(t, "11.0.0.0"), ip4(t, "12.255.255.255")}, // adjacent, merged
		{ip4(t, "172.16.0.0"), ip4(t, "172.16.255.255")},
		{ip4(t, "192.168.1.0"), ip4(t, "192.168.1.255")},
	}, l.v4)
	assert.Len(t, l.globs, 1, "only 10.?.?.1 stays a glob, deduplicated")

	l, err = Parse([]string{"::/1", "8000::/1", "2001:db8::/32"})
	require.NoError(t, err)
	assert.Len(t, l.v6, 1, "the whole IPv6 space is one interval")

	l, err = Parse([]string{"0.0.0.0/1", "128.0.0.0/1", "255.255.255.255"})
	require.NoError(t, err)
	assert.Equal(t, []v4Range{{0, 0xffffffff}}, l.v4)
}

func ip4(t *testing.T, s string) uint32 {
	t.Helper()
	return v4Int(netip.MustParseAddr(s))
}

func TestListContainsAllocs(t *testing.T) {
	l := benchList(b1000)
	addrs := []netip.Addr{
		netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("8.8.8.8"),
		netip.MustParseAddr("::ffff:8.8.8.8"),
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("fe80::1%eth0"),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			l.Contains(a)
		}
	})
	assert.Zero(t, allocs)
}

func TestRanges(t *testing.T) {
	l, err := Parse([]string{"10.0.0.0/24", "10.0.1.0/24", "192.168.1.*", "2001:db8::1-2001:db8::ff"})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := l.Ranges()
	if err != nil {
		t.Fatal(err)
	}
	want := []Range{
		{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.1.255")},
		{netip.MustParseAddr("192.168.1.0"), netip.MustParseAddr("192.168.1.255")},
		{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ff")},
	}
	if !slices.Equal(rs, want) {
		t.Fatalf("Ranges = %v, want %v", rs, want)
	}
	l, _ = Parse([]string{"10.*.*.1", "10.0.0.1"})
	if _, err := l.Ranges(); err == nil || !strings.Contains(err.Error(), `"10.*.*.1"`) {
		t.Fatalf("non-interval glob: err = %v, want it named", err)
	}
	l, _ = Parse([]string{"*"})
	if rs, _ := l.Ranges(); len(rs) != 2 || !rs[1].To.Is6() {
		t.Fatalf(`"*" = %v, want both families whole`, rs)
	}
}
