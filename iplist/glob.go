package iplist

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// IPv4 globs ("10.*.*.1", "10.?.?.1") are compiled into one 256-bit set
// per octet, so matching one never renders the address as text.

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
