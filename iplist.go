package smartproxy

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// IPList is a compiled, immutable list of IP patterns, used for route
// match.clientIp and for the security ipAllowList/ipBlockList. It is safe
// for concurrent use. A nil *IPList contains nothing.
//
// Every pattern except non-contiguous IPv4 globs is compiled into a closed
// address interval; intervals are sorted and merged per address family, so
// Contains is a binary search (O(log n), independent of how many distinct
// prefix lengths are configured) plus a linear scan over the few globs that
// cannot be expressed as a single interval, each of which is four bitmap
// probes (skipped entirely when a per-octet union of all globs rules the
// address out). Contains never allocates.
type IPList struct {
	patterns []string  // trimmed patterns, in input order, for String and Len
	all      bool      // a "*" pattern was given
	v4       []v4Range // sorted by lo, merged: disjoint and non-adjacent
	v6       []v6Range // sorted by lo, merged: disjoint and non-adjacent
	globs    []v4Glob  // globs that are not a single interval, deduplicated
	globAny  v4Glob    // per-octet union of globs: a cheap filter for misses
}

// v4Range is a closed interval of IPv4 addresses as big-endian integers.
type v4Range struct{ lo, hi uint32 }

// u128 is an IPv6 address as a big-endian 128-bit integer. Comparing two
// uint64 halves is much cheaper than comparing netip.Addr values or byte
// arrays in the hot binary search.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// compare orders a and b like cmp.Compare, for sorting.

func (a u128) compare(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// next returns a+1 and false, or 0 and true when a is the maximum value.
func (a u128) next() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return u128{}, true
		}
	}
	return u128{hi, lo}, false
}

// v6Range is a closed interval of IPv6 addresses.
type v6Range struct{ lo, hi u128 }

// octetSet is a 256-bit set of octet values.
type octetSet [4]uint64

func (s *octetSet) add(v uint8)      { s[v>>6] |= 1 << (v & 63) }
func (s *octetSet) has(v uint8) bool { return s[v>>6]&(1<<(v&63)) != 0 }
func (s *octetSet) full() bool       { return s[0]&s[1]&s[2]&s[3] == math.MaxUint64 }
func (s *octetSet) empty() bool      { return s[0]|s[1]|s[2]|s[3] == 0 }

// single reports whether the set holds exactly one value, and returns it.
func (s *octetSet) single() (uint8, bool) {
	lo, hi, ok := s.interval()
	return lo, ok && lo == hi
}

// interval reports whether the set is one non-empty contiguous run of values
// and returns its bounds.
func (s *octetSet) interval() (lo, hi uint8, ok bool) {
	first := -1
	last := -1
	for v := 0; v < 256; v++ {
		if !s.has(uint8(v)) {
			continue
		}
		if first < 0 {
			first = v
		} else if last != v-1 {
			return 0, 0, false // a gap after the run started
		}
		last = v
	}
	if first < 0 {
		return 0, 0, false
	}
	return uint8(first), uint8(last), true
}

// v4Glob matches an IPv4 address octet by octet. Each field of the glob was
// evaluated against all 256 possible octet texts at compile time, so a match
// at run time is four bit tests and needs no string.
type v4Glob [4]octetSet

func (g *v4Glob) match(a [4]byte) bool {
	return g[0].has(a[0]) && g[1].has(a[1]) && g[2].has(a[2]) && g[3].has(a[3])
}

// ParseIPList compiles IP patterns (TypeScript SmartProxy compatible) into an
// IPList. Surrounding whitespace of each pattern is trimmed. The accepted
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
func ParseIPList(patterns []string) (*IPList, error) {
	l := &IPList{patterns: make([]string, 0, len(patterns))}
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
func (l *IPList) Contains(ip netip.Addr) bool {
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
func (l *IPList) Len() int {
	if l == nil {
		return 0
	}
	return len(l.patterns)
}

// String returns the patterns as given (whitespace-trimmed), separated by
// ", ", for logs. A nil or empty list yields "".
func (l *IPList) String() string {
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
func (l *IPList) add(p string) error {
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
func (l *IPList) addInterval(lo, hi netip.Addr) {
	if lo.Is4() {
		l.v4 = append(l.v4, v4Range{v4Int(lo), v4Int(hi)})
		return
	}
	l.v6 = append(l.v6, v6Range{v6Int(lo), v6Int(hi)})
}

func (l *IPList) addCIDR(p string) error {
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

func (l *IPList) addRange(p string) error {
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

func (l *IPList) addGlob(p string) error {
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
	return nil
}

// interval reports whether the glob matches exactly one contiguous block of
// addresses: leading fields that each match a single octet, then at most one
// field matching a contiguous run, then fields matching every octet.
func (g *v4Glob) interval() (lo, hi uint32, ok bool) {
	k := 0
	for k < 4 {
		v, single := g[k].single()
		if !single {
			break
		}
		lo = lo<<8 | uint32(v)
		hi = hi<<8 | uint32(v)
		k++
	}
	if k < 4 {
		a, b, run := g[k].interval()
		if !run {
			return 0, 0, false
		}
		lo = lo<<8 | uint32(a)
		hi = hi<<8 | uint32(b)
		k++
	}
	for ; k < 4; k++ {
		if !g[k].full() {
			return 0, 0, false
		}
		lo <<= 8
		hi = hi<<8 | 0xff
	}
	return lo, hi, true
}

// compileOctetGlob fills set with every octet value whose canonical decimal
// text matches the glob field f.
func compileOctetGlob(f string, set *octetSet) error {
	if f == "" {
		return errors.New("empty octet")
	}
	if strings.Trim(f, "0123456789*?") != "" {
		return fmt.Errorf("invalid character in glob octet %q", f)
	}
	if f == "*" {
		*set = octetSet{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64}
		return nil
	}
	if !strings.ContainsAny(f, "*?") {
		// Give literal octets the same precise errors as exact addresses.
		v, err := parseOctet(f)
		if err != nil {
			return err
		}
		set.add(v)
		return nil
	}
	// Evaluate the field against every possible octet text once, so that
	// matching never needs to render the address as a string.
	var buf [3]byte
	for v := 0; v < 256; v++ {
		if globMatch(f, strconv.AppendUint(buf[:0], uint64(v), 10)) {
			set.add(uint8(v))
		}
	}
	if set.empty() {
		return fmt.Errorf("glob octet %q matches no value 0-255", f)
	}
	return nil
}

// globMatch reports whether text matches pattern, where '*' matches any run
// of bytes (including none) and '?' exactly one byte. It is the usual
// iterative algorithm with single-star backtracking, so a pattern full of
// stars cannot blow up exponentially.
func globMatch(pattern string, text []byte) bool {
	p, t := 0, 0
	starP, starT := -1, 0
	for t < len(text) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == text[t]):
			p++
			t++
		case p < len(pattern) && pattern[p] == '*':
			starP, starT = p, t
			p++
		case starP >= 0:
			// Let the last star swallow one more byte and retry.
			starT++
			p, t = starP+1, starT
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// parseAddr parses an exact IPv4 or IPv6 address without unmapping it (CIDR
// parsing needs to know about the mapping to adjust the prefix length).
// IPv4 is parsed here rather than by netip so that errors can say precisely
// what is wrong with which octet.
func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("empty address")
	}
	if strings.Contains(s, "%") {
		return netip.Addr{}, errors.New("IPv6 zones are not allowed")
	}
	if strings.Contains(s, ":") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, errors.New("invalid IPv6 address")
		}
		return a, nil
	}
	if strings.Trim(s, "0123456789.") != "" {
		return netip.Addr{}, errors.New("not an IP address, CIDR, range or glob")
	}
	fields := strings.Split(s, ".")
	if len(fields) != 4 {
		return netip.Addr{}, fmt.Errorf("IPv4 address needs 4 octets, got %d", len(fields))
	}
	var b [4]byte
	for i, f := range fields {
		v, err := parseOctet(f)
		if err != nil {
			return netip.Addr{}, err
		}
		b[i] = v
	}
	return netip.AddrFrom4(b), nil
}

// parseOctet parses one decimal IPv4 octet made only of digits.
func parseOctet(f string) (uint8, error) {
	switch {
	case f == "":
		return 0, errors.New("empty octet")
	case len(f) > 1 && f[0] == '0':
		return 0, errors.New("octet has a leading zero")
	case len(f) > 3:
		return 0, errors.New("octet out of range")
	}
	v, err := strconv.Atoi(f)
	if err != nil || v > 255 {
		return 0, errors.New("octet out of range")
	}
	return uint8(v), nil
}

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func v4Int(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func v6Int(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// lastAddr returns the highest address of a masked prefix. Go defines a
// shift by the full operand width to yield 0, so 1<<host-1 is all ones for
// host == 32 (or 64) too.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	host := a.BitLen() - p.Bits()
	if a.Is4() {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v4Int(a)|(uint32(1)<<host-1))
		return netip.AddrFrom4(b)
	}
	v := v6Int(a)
	if host >= 64 {
		v.lo = math.MaxUint64
		v.hi |= uint64(1)<<(host-64) - 1
	} else {
		v.lo |= uint64(1)<<host - 1
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// mergeV4 sorts ranges and coalesces overlapping or adjacent ones, so the
// binary search needs a single predecessor check.
func mergeV4(rs []v4Range) []v4Range {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b v4Range) int { return cmp.Compare(a.lo, b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.hi == math.MaxUint32 || r.lo <= last.hi+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// mergeV6 is mergeV4 for IPv6.
func mergeV6(rs []v6Range) []v6Range {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b v6Range) int { return a.lo.compare(b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		next, overflow := last.hi.next()
		if overflow || !next.less(r.lo) {
			if last.hi.less(r.hi) {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// dedupGlobs drops duplicate globs, since they are scanned linearly on every
// miss.
func dedupGlobs(gs []v4Glob) []v4Glob {
	if len(gs) == 0 {
		return nil
	}
	out := gs[:0]
	for _, g := range gs {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return slices.Clip(out)
}
