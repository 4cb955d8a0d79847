package h1parse

// reference_test.go is the head parser as it was before the one-pass
// rewrite (commit e8bd1d4), renamed ref*: the differential fuzz tests
// (differential_test.go) hold the new Parse and ParseResponse to its
// decisions and parsed values. Only the names changed.

import (
	"bytes"
	"fmt"
)

// refReset is reset as it was.
func (r *Request) refReset() {
	fields := r.Fields[:0]
	*r = Request{Fields: fields, ContentLength: -1}
}

// refMalformed is malformed as it was.
func refMalformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Parse parses the request head at the start of buf into r. It returns
// ErrIncomplete when buf holds no complete head yet (the caller reads
// more, up to its limit), or an error wrapping ErrMalformed or
// ErrUnsupported for a head it refuses.
func refParse(buf []byte, r *Request) error {
	r.refReset()
	end := bytes.Index(buf, refCRLFCRLF)
	if end < 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && (i == 0 || buf[i-1] != '\r') {
			return refMalformed("bare LF") // refused early: it will never end in CRLF CRLF
		}
		return ErrIncomplete
	}
	r.HeadLen = end + 4
	head := buf[:end+2] // every line with its CRLF
	line, rest, err := refNextLine(head)
	if err != nil {
		return err
	}
	if err := r.refRequestLine(line); err != nil {
		return err
	}
	var fr refFramingFields
	host := 0
	err = fr.parse(rest, &r.Fields, func(f Field) {
		switch {
		case refEqualFold(f.Name, "host"):
			host++
			r.Host = f.Value
		case refEqualFold(f.Name, "expect"):
			r.Expect = true
		}
	})
	if err != nil {
		return err
	}
	r.ContentLength, r.Chunked, r.Close, r.Upgrade = fr.length, fr.te > 0, fr.close, fr.upgrade
	if r.Minor == 0 && !fr.keepAlive {
		r.Close = true
	}
	return r.refFraming(fr.cl, fr.te, host)
}

// framing applies the rules that need the whole head.
func (r *Request) refFraming(cl, te, host int) error {
	switch {
	case te > 0 && r.Minor == 0:
		return refMalformed("Transfer-Encoding on HTTP/1.0")
	case r.Minor == 1 && host != 1:
		return refMalformed("%d Host fields", host)
	case host == 1 && !refValidHost(r.Host):
		return refMalformed("Host %q", r.Host)
	}
	if te > 0 && cl > 0 {
		// RFC 9112 6.1: chunked rules, the length is dropped and the
		// connection closed after the response (as HAProxy does).
		r.ContentLength, r.Close = -1, true
	}
	return nil
}

var refCRLFCRLF = []byte("\r\n\r\n")

// refNextLine splits off the first CRLF-terminated line of b (which ends in
// CRLF); a CR or LF inside the line is refused.
func refNextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, refMalformed("bare LF")
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, refMalformed("bare CR")
	}
	return line, b[i+1:], nil
}

// refRequestLine parses method SP target SP HTTP/1.x.
func (r *Request) refRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return refMalformed("request line %q", line)
	}
	r.Method = line[:sp1]
	if !refIsToken(r.Method) {
		return refMalformed("method %q", r.Method)
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return refMalformed("request line %q", line)
	}
	r.Target = rest[:sp2]
	for _, c := range r.Target {
		if c <= ' ' || c >= 0x7f {
			return refMalformed("request target %q", r.Target)
		}
	}
	if !r.refTargetForm() {
		return refMalformed("request target %q", r.Target)
	}
	switch v := rest[sp2+1:]; string(v) {
	case "HTTP/1.1":
		r.Minor = 1
	case "HTTP/1.0":
		r.Minor = 0
	default:
		return refMalformed("version %q", v)
	}
	return nil
}

// refTargetForm reports a target in one of RFC 9112's four forms:
// origin-form, absolute-form (http or https), authority-form for CONNECT
// only and asterisk-form for OPTIONS only.
func (r *Request) refTargetForm() bool {
	t := r.Target
	switch {
	case t[0] == '/':
		return true
	case len(t) == 1 && t[0] == '*':
		return string(r.Method) == "OPTIONS"
	case string(r.Method) == "CONNECT":
		return refValidHost(t) && bytes.IndexByte(t, ':') > 0
	}
	i := bytes.Index(t, []byte("://"))
	return i > 0 && (refEqualFold(t[:i], "http") || refEqualFold(t[:i], "https")) && len(t) > i+3
}

// refFieldLine parses name ":" OWS value OWS.
func refFieldLine(line []byte) (Field, error) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			return Field{}, refMalformed("obs-fold")
		}
		return Field{}, refMalformed("field line %q", line)
	}
	name := line[:colon]
	if !refIsToken(name) {
		return Field{}, refMalformed("field name %q", name)
	}
	v := refTrimOWS(line[colon+1:])
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return Field{}, refMalformed("control byte in field %q", name)
		}
	}
	return Field{Name: name, Value: v}, nil
}

// refParseContentLength reads a Content-Length value (1*DIGIT, up to 18
// digits, or a list of equal ones) given the length read so far (-1:
// none); a length that differs from cur is refused.
func refParseContentLength(v []byte, cur int64) (int64, error) {
	for item := range bytes.SplitSeq(v, []byte(",")) {
		item = refTrimOWS(item)
		if len(item) == 0 || len(item) > 18 {
			return cur, refMalformed("Content-Length %q", v)
		}
		var n int64
		for _, c := range item {
			if c < '0' || c > '9' {
				return cur, refMalformed("Content-Length %q", v)
			}
			n = n*10 + int64(c-'0')
		}
		if cur >= 0 && cur != n {
			return cur, refMalformed("differing Content-Length")
		}
		cur = n
	}
	return cur, nil
}

// refFramingFields is what a head's fields say about its framing and its
// connection: one reading of Content-Length, Transfer-Encoding and
// Connection for requests (Parse) and responses (ParseResponse), so the
// two directions cannot come to read them differently.
type refFramingFields struct {
	cl, te    int   // how many Content-Length and Transfer-Encoding fields
	length    int64 // the Content-Length, -1 when there is none
	keepAlive bool  // Connection lists keep-alive
	close     bool  // Connection lists close
	upgrade   bool  // Connection lists upgrade
}

// parse reads the field lines of head (each ending in CRLF, the start
// line and the empty line gone) into *fields, noting the framing fields
// in fr and giving every other field to other (when set). It refuses a
// line that is no field, more than MaxFields fields, a Content-Length
// that is not one non-negative number (or a list of equal ones), and
// any Transfer-Encoding but one "chunked".
func (fr *refFramingFields) parse(head []byte, fields *[]Field, other func(Field)) error {
	fr.length = -1
	for len(head) > 0 {
		line, rest, err := refNextLine(head)
		if err != nil {
			return err
		}
		head = rest
		if len(*fields) == MaxFields {
			return refMalformed("more than %d fields", MaxFields)
		}
		f, err := refFieldLine(line)
		if err != nil {
			return err
		}
		*fields = append(*fields, f)
		switch {
		case refEqualFold(f.Name, "content-length"):
			fr.cl++
			if fr.length, err = refParseContentLength(f.Value, fr.length); err != nil {
				return err
			}
		case refEqualFold(f.Name, "transfer-encoding"):
			fr.te++
			if fr.te > 1 || !refEqualFold(f.Value, "chunked") {
				return fmt.Errorf("%w: Transfer-Encoding %q", ErrUnsupported, f.Value)
			}
		case refEqualFold(f.Name, "connection"):
			fr.connection(f.Value)
		default:
			if other != nil {
				other(f)
			}
		}
	}
	return nil
}

// connection notes the tokens of a Connection field.
func (fr *refFramingFields) connection(v []byte) {
	for tok := range bytes.SplitSeq(v, []byte(",")) {
		tok = refTrimOWS(tok)
		switch {
		case refEqualFold(tok, "close"):
			fr.close = true
		case refEqualFold(tok, "upgrade"):
			fr.upgrade = true
		case refEqualFold(tok, "keep-alive"):
			fr.keepAlive = true
		}
	}
}
