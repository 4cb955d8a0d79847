package h1parse

// reference_response_test.go is the rest of the parser before the
// one-pass rewrite (see reference_test.go): ParseResponse and the byte
// classes, renamed ref*.

import "bytes"

// refReset is reset as it was.
func (r *Response) refReset() {
	fields := r.Fields[:0]
	*r = Response{Fields: fields, ContentLength: -1}
}

// ParseResponse parses the response head at the start of buf into r;
// head says the request was HEAD (its response has no body whatever it
// declares). Errors are those of Parse: ErrIncomplete for a head that
// needs more bytes, ErrMalformed or ErrUnsupported for one refused, with
// the rules of the request head (CRLF only, no obs-fold, no control
// bytes in values, strict Content-Length, Transfer-Encoding exactly
// "chunked"), and a response with both Content-Length and
// Transfer-Encoding is refused outright: a backend that sends both is
// broken or attacked, and the proxy must not guess (RFC 9112 6.1 lets a
// recipient treat it as an error; HAProxy does for responses).
func refParseResponse(buf []byte, r *Response, head bool) error {
	r.refReset()
	end := bytes.Index(buf, refCRLFCRLF)
	if end < 0 {
		i := bytes.IndexByte(buf, '\n')
		switch {
		case i < 0:
		case i == 0 || buf[i-1] != '\r':
			return refMalformed("bare LF")
		default:
			// A status line already complete is judged now: a peer that is
			// no HTTP server (or a banner) fails at once, not at the head
			// timeout.
			if err := r.refStatusLine(buf[:i-1]); err != nil {
				return err
			}
		}
		return ErrIncomplete
	}
	r.HeadLen = end + 4
	line, rest, err := refNextLine(buf[:end+2])
	if err != nil {
		return err
	}
	if err := r.refStatusLine(line); err != nil {
		return err
	}
	var fr refFramingFields
	if err := fr.parse(rest, &r.Fields, nil); err != nil {
		return err
	}
	cl, te := fr.cl, fr.te
	r.ContentLength, r.Close = fr.length, fr.close
	if r.Minor == 0 && !fr.keepAlive {
		r.Close = true
	}
	switch {
	case cl > 0 && te > 0:
		return refMalformed("response with Content-Length and Transfer-Encoding")
	case te > 0 && r.Minor == 0:
		return refMalformed("Transfer-Encoding on HTTP/1.0")
	case head || r.Status < 200 || r.Status == 204 || r.Status == 304:
		r.Framing = NoBody
	case te > 0:
		r.Framing = Chunked
	case cl > 0:
		r.Framing = Length
	default:
		r.Framing, r.Close = UntilClose, true
	}
	return nil
}

// refStatusLine parses HTTP/1.x SP 3DIGIT [SP reason]. A missing reason
// (with or without its SP) is taken, as every client takes it; the
// reason may hold SP, HTAB and visible or obs-text bytes only.
func (r *Response) refStatusLine(line []byte) error {
	if len(line) < 12 || line[8] != ' ' {
		return refMalformed("status line %q", line)
	}
	switch string(line[:8]) {
	case "HTTP/1.1":
		r.Minor = 1
	case "HTTP/1.0":
		r.Minor = 0
	default:
		return refMalformed("version %q", line[:8])
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return refMalformed("status code %q", code)
		}
	}
	r.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if r.Status < 100 {
		return refMalformed("status code %q", code)
	}
	rest := line[12:]
	if len(rest) > 0 {
		if rest[0] != ' ' {
			return refMalformed("status line %q", line)
		}
		r.Reason = rest[1:]
		for _, c := range r.Reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return refMalformed("control byte in reason %q", r.Reason)
			}
		}
	}
	return nil
}

// refIsTokenChar reports an RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and
// letters.
func refIsTokenChar(c byte) bool {
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

// refIsToken reports a non-empty run of tchar.
func refIsToken(b []byte) bool {
	for _, c := range b {
		if !refIsTokenChar(c) {
			return false
		}
	}
	return len(b) > 0
}

// refTrimOWS drops leading and trailing SP and HTAB.
func refTrimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// refEqualFold compares b with s, ignoring ASCII case on both sides: the
// one field-name and token comparison of this parser and its callers
// (the proxy's fast path). S is string or []byte, so that neither side
// is converted (which would allocate).
func refEqualFold[S ~string | ~[]byte](b []byte, s S) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if c, d := b[i], s[i]; c != d && refLowerASCII(c) != refLowerASCII(d) {
			return false
		}
	}
	return true
}

// refLowerASCII is c in lower case when it is an ASCII letter.
func refLowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// refValidHost reports a Host value made of RFC 3986 reg-name, IP-literal
// and port characters: unreserved, sub-delims, '%', ':', '[' and ']'.
// Empty is allowed (RFC 9112 3.2: a target without authority).
func refValidHost(b []byte) bool {
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
