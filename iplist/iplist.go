// Package iplist compiles lists of IP address patterns (exact addresses,
// CIDR prefixes, ranges and IPv4 globs, in the syntax of the TypeScript
// SmartProxy) into an immutable [List] whose [List.Contains] is a binary
// search that never allocates.
//
// smartproxy uses it for a route's match.clientIp and for the security
// ipAllowList and ipBlockList; it depends on nothing but the standard
// library and can be used on its own.
package iplist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// List is a compiled, immutable list of IP patterns. It is safe for
// concurrent use. A nil *List contains nothing.
//
// Every pattern except non-contiguous IPv4 globs is compiled into a closed
// address interval; intervals are sorted and merged per address family, so
// Contains is a binary search (O(log n), independent of how many distinct
// prefix lengths are configured) plus a linear scan over the few globs that
// cannot be expressed as a single interval, each of which is four bitmap
// probes (skipped entirely when a per-octet union of all globs rules the
// address out). Contains never allocates.
type List struct {
	patterns []string  // trimmed patterns, in input order, for String and Len
	all      bool      // a "*" pattern was given
	v4       []v4Range // sorted by lo, merged: disjoint and non-adjacent
	v6       []v6Range // sorted by lo, merged: disjoint and non-adjacent
	globs    []v4Glob  // globs that are not a single interval, deduplicated
	globAny  v4Glob    // per-octet union of globs: a cheap filter for misses
	// globText names the patterns in globs, for Ranges' error.
	globText []string
}

// Parse compiles IP patterns (TypeScript SmartProxy compatible) into a
// List. Surrounding whitespace of each pattern is trimmed. The accepted
// forms are:
//
//   - "*": every IPv4 and IPv6 address.
//   - An exact address: "10.0.0.1", "2001:db8::1". An IPv4-mapped IPv6
//     address such as "::ffff:10.0.0.1" is normalised to IPv4. IPv6 zones
//     ("fe80::1%eth0") are rejected, as are IPv4 octets with leading zeros,
//     which some parsers read as octal.
//   - CIDR: "10.0.0.0/8", "2001:db8::/32". Host bits may be set and are
//     masked off. An IPv4-mapped prefix of length 96 or more
//     ("::ffff:10.0.0.0/104") is normalised to IPv4 ("10.0.0.0/8"); shorter
//     IPv6 prefixes such as "::/0" only ever match IPv6 addresses.
//   - Range: "10.0.0.1-10.0.0.50", "2001:db8::1-2001:db8::ff", inclusive on
//     both ends; both ends must be of the same family (after normalising
//     IPv4-mapped addresses) and start must not be after end.
//   - IPv4 glob: a pattern containing '*' or '?', e.g. "192.168.1.*",
//     "10.*.*.1", "10.?.?.1". The pattern is split on dots into fields and
//     each field is matched against the canonical decimal text of the
//     corresponding octet (no leading zeros): '*' matches any run of digits,
//     including none, and '?' exactly one digit; other characters must be
//     digits. For four-field globs this is exactly shell-style matching of the
//     whole canonical dotted-quad string. A glob may have fewer than four
//     fields only if its last field is a lone '*', which then stands for all
//     remaining octets ("10.*" is "10.*.*.*"), so the common shorthands
//     "10.*" and "192.168.*" mean what they look like. A field that can match no octet (e.g.
//     "3??") is an error. Globs that describe one contiguous block, such as
//     "a.b.c.*", "a.b.*.*", "a.*.*.*" or "10.0.0.1?", are compiled to an
//     address interval, the others to per-octet bitmaps.
//
// IPv4 patterns never match IPv6 addresses and vice versa (only "*" matches
// both). An invalid pattern yields an error of the form
// `ip pattern "10.0.0.300": octet out of range`; callers add the context
// (route name, field). An empty or nil patterns slice yields an empty list.
func Parse(patterns []string) (*List, error) {
	l := &List{patterns: make([]string, 0, len(patterns))}
	for _, raw := range patterns {
		p := strings.TrimSpace(raw)
		if err := l.add(p); err != nil {
			return nil, fmt.Errorf("ip pattern %q: %w", raw, err)
		}
		l.patterns = append(l.patterns, p)
	}
	l.v4 = mergeV4(l.v4)
	l.v6 = mergeV6(l.v6)
	l.globs = dedupGlobs(l.globs)
	for i := range l.globs {
		for j := range l.globAny {
			for k := range l.globAny[j] {
				l.globAny[j][k] |= l.globs[i][j][k]
			}
		}
	}
	if l.all {
		// Everything matches; drop the rest so nothing is retained needlessly.
		l.v4, l.v6, l.globs = nil, nil, nil
	}
	return l, nil
}

// Contains reports whether ip matches any pattern of the list. An
// IPv4-mapped IPv6 address is unmapped first, so "::ffff:10.0.0.1" is
// treated as "10.0.0.1"; an IPv6 zone on ip is ignored. The zero Addr
// matches nothing. Contains does not allocate.
func (l *List) Contains(ip netip.Addr) bool {
	if l == nil || !ip.IsValid() {
		return false
	}
	if l.all {
		return true
	}
	ip = ip.Unmap()
	if ip.Is4() {
		a := ip.As4()
		if containsV4(l.v4, binary.BigEndian.Uint32(a[:])) {
			return true
		}
		if !l.globAny.match(a) {
			// No glob can match, so skip the linear scan; this keeps misses,
			// the common case for allow lists, at a constant cost.
			return false
		}
		for i := range l.globs {
			if l.globs[i].match(a) {
				return true
			}
		}
		return false
	}
	a := ip.As16() // ignores any zone, which is what we want
	return containsV6(l.v6, u128{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])})
}

// Len returns the number of patterns compiled, duplicates included.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return len(l.patterns)
}

// String returns the patterns as given (whitespace-trimmed), separated by
// ", ", for logs. A nil or empty list yields "".
func (l *List) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.patterns, ", ")
}

// containsV4 reports whether v lies in one of the sorted, disjoint ranges.
// It is a hand-written binary search because slices.BinarySearchFunc would
// go through an indirect comparison call per step.
func containsV4(rs []v4Range, v uint32) bool {
	// Find the first range whose lo is greater than v; the candidate is the
	// one before it.
	i, j := 0, len(rs)
	for i < j {
		h := int(uint(i+j) >> 1)
		if rs[h].lo <= v {
			i = h + 1
		} else {
			j = h
		}
	}
	return i > 0 && v <= rs[i-1].hi
}

// containsV6 is containsV4 for IPv6.
func containsV6(rs []v6Range, v u128) bool {
	i, j := 0, len(rs)
	for i < j {
		h := int(uint(i+j) >> 1)
		if !v.less(rs[h].lo) {
			i = h + 1
		} else {
			j = h
		}
	}
	return i > 0 && !rs[i-1].hi.less(v)
}

// add compiles one trimmed pattern into l.
func (l *List) add(p string) error {
	switch {
	case p == "":
		return errors.New("empty pattern")
	case p == "*":
		l.all = true
		return nil
	case strings.Contains(p, "%"):
		return errors.New("IPv6 zones are not allowed")
	case strings.Contains(p, "/"):
		return l.addCIDR(p)
	case strings.Contains(p, "-"):
		return l.addRange(p)
	case strings.ContainsAny(p, "*?"):
		return l.addGlob(p)
	}
	a, err := parseAddr(p)
	if err != nil {
		return err
	}
	a = a.Unmap()
	l.addInterval(a, a)
	return nil
}

// addInterval appends the closed interval [lo, hi]; both must be of the same
// family and already unmapped.
func (l *List) addInterval(lo, hi netip.Addr) {
	if lo.Is4() {
		l.v4 = append(l.v4, v4Range{v4Int(lo), v4Int(hi)})
		return
	}
	l.v6 = append(l.v6, v6Range{v6Int(lo), v6Int(hi)})
}

func (l *List) addCIDR(p string) error {
	addrText, bitsText, _ := strings.Cut(p, "/")
	a, err := parseAddr(strings.TrimSpace(addrText))
	if err != nil {
		return err
	}
	bitsText = strings.TrimSpace(bitsText)
	if bitsText == "" {
		return errors.New("missing prefix length")
	}
	maxBits := a.BitLen()
	// Digits only: strconv.Atoi would also accept a sign.
	if len(bitsText) > 3 || strings.Trim(bitsText, "0123456789") != "" {
		return fmt.Errorf("invalid prefix length %q", bitsText)
	}
	bits, _ := strconv.Atoi(bitsText)
	if bits > maxBits {
		return fmt.Errorf("prefix length %d out of range for IPv%d (max %d)", bits, ipVersion(a), maxBits)
	}
	if a.Is4In6() && bits >= 96 {
		// "::ffff:10.0.0.0/104" is really "10.0.0.0/8"; unmapping keeps it
		// reachable, because Contains unmaps its input.
		a, bits = a.Unmap(), bits-96
	}
	pfx := netip.PrefixFrom(a, bits).Masked()
	l.addInterval(pfx.Addr(), lastAddr(pfx))
	return nil
}

func (l *List) addRange(p string) error {
	startText, endText, _ := strings.Cut(p, "-")
	if strings.Contains(endText, "-") {
		return errors.New("range has more than one '-'")
	}
	start, err := parseAddr(strings.TrimSpace(startText))
	if err != nil {
		return fmt.Errorf("range start: %w", err)
	}
	end, err := parseAddr(strings.TrimSpace(endText))
	if err != nil {
		return fmt.Errorf("range end: %w", err)
	}
	start, end = start.Unmap(), end.Unmap()
	if start.Is4() != end.Is4() {
		return errors.New("range mixes IPv4 and IPv6")
	}
	if end.Less(start) {
		return errors.New("range start is after end")
	}
	l.addInterval(start, end)
	return nil
}

func (l *List) addGlob(p string) error {
	if strings.Contains(p, ":") {
		return errors.New("globs are only supported for IPv4")
	}
	fields := strings.Split(p, ".")
	if len(fields) > 4 {
		return errors.New("glob has more than 4 octets")
	}
	if len(fields) < 4 {
		if fields[len(fields)-1] != "*" {
			return errors.New("glob has fewer than 4 octets and does not end in \".*\"")
		}
		for len(fields) < 4 {
			fields = append(fields, "*")
		}
	}
	var g v4Glob
	for i, f := range fields {
		if err := compileOctetGlob(f, &g[i]); err != nil {
			return err
		}
	}
	// Contiguous blocks (the common "a.b.c.*" family) become intervals so
	// they join the binary search instead of the linear glob scan.
	if lo, hi, ok := g.interval(); ok {
		l.v4 = append(l.v4, v4Range{lo, hi})
		return nil
	}
	l.globs = append(l.globs, g)
	l.globText = append(l.globText, p)
	return nil
}
