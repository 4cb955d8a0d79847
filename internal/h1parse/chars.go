package h1parse

// The byte classes of a head, one 256-entry table: the parser's inner
// loops test a byte with one load and one AND instead of a chain of
// comparisons (a switch per name byte cost ~10 instructions).
const (
	classTchar = 1 << iota // RFC 9110 tchar
	classValue             // field-value and reason byte: HTAB, SP, VCHAR, obs-text
	classHost              // RFC 3986 reg-name, IP-literal and port byte (validHost)
)

// byteClass holds the classes of every byte value, built once from the
// definitions below.
var byteClass = func() (t [256]uint8) {
	for i := range t {
		c := byte(i)
		if tcharSwitch(c) {
			t[i] |= classTchar
		}
		if c >= ' ' && c != 0x7f || c == '\t' {
			t[i] |= classValue
		}
		if hostSwitch(c) {
			t[i] |= classHost
		}
	}
	return t
}()

// tcharSwitch is the definition of tchar: "!#$%&'*+-.^_`|~", digits and
// letters.
func tcharSwitch(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// hostSwitch is the definition of a Host byte: unreserved, sub-delims,
// '%', ':', '[' and ']'.
func hostSwitch(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', '%', ':', '[', ']':
		return true
	}
	return false
}

// IsTokenChar reports an RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and
// letters.
func IsTokenChar(c byte) bool { return byteClass[c]&classTchar != 0 }

// isToken reports a non-empty run of tchar.
func isToken(b []byte) bool {
	for _, c := range b {
		if byteClass[c]&classTchar == 0 {
			return false
		}
	}
	return len(b) > 0
}

// trimOWS drops leading and trailing SP and HTAB.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// EqualFold compares b with s, ignoring ASCII case on both sides: the
// one field-name and token comparison of this parser and its callers
// (the proxy's fast path). S is string or []byte, so that neither side
// is converted (which would allocate).
func EqualFold[S ~string | ~[]byte](b []byte, s S) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if c, d := b[i], s[i]; c != d && lowerASCII(c) != lowerASCII(d) {
			return false
		}
	}
	return true
}

// tokenIs compares a token (tchar only, as a parsed field name is) with
// lower, a lower-case name of letters and '-': b|0x20 folds a letter's
// case, and no other tchar folds onto a letter or onto '-' (only CR,
// 0x0d, would reach '-'). Cheaper than EqualFold for the framing names
// that every field line is compared with.
func tokenIs(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		if b[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// lowerASCII is c in lower case when it is an ASCII letter.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// validHost reports a Host value made of RFC 3986 reg-name, IP-literal
// and port characters: unreserved, sub-delims, '%', ':', '[' and ']'.
// Empty is allowed (RFC 9112 3.2: a target without authority).
func validHost(b []byte) bool {
	for _, c := range b {
		if byteClass[c]&classHost == 0 {
			return false
		}
	}
	return true
}

// fieldValue is the value of the first of fields named name (ASCII case
// insensitive), nil when there is none.
func fieldValue(fields []Field, name string) []byte {
	for i := range fields {
		if EqualFold(fields[i].Name, name) {
			return fields[i].Value
		}
	}
	return nil
}
