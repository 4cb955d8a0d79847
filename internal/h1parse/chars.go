package h1parse

// IsTokenChar reports an RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and
// letters.
func IsTokenChar(c byte) bool {
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

// isToken reports a non-empty run of tchar.
func isToken(b []byte) bool {
	for _, c := range b {
		if !IsTokenChar(c) {
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
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			switch c {
			case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', '%', ':', '[', ']':
			default:
				return false
			}
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
