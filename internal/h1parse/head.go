package h1parse

import (
	"bytes"
	"errors"
	"fmt"
)

// MaxFields bounds the field lines of a head (HAProxy's default
// tune.http.maxhdr is 101).
const MaxFields = 100

// Errors of Parse. A head that needs more bytes is ErrIncomplete; the
// others are wrapped with the reason and mean: answer 400 (or 501) and
// close the connection.
var (
	ErrIncomplete  = errors.New("h1parse: incomplete head")
	ErrMalformed   = errors.New("h1parse: malformed head")
	ErrUnsupported = errors.New("h1parse: unsupported transfer coding")
)

// Field is one field line: slices of the parsed buffer, the value
// without leading and trailing whitespace.
type Field struct {
	Name, Value []byte
}

// Request is one parsed head. Its slices point into the buffer given to
// Parse and are valid until that buffer is reused; Parse resets it, so
// one Request serves a whole connection without allocating.
type Request struct {
	Method, Target []byte
	Minor          int // HTTP/1.Minor: 0 or 1
	Fields         []Field
	Host           []byte // the Host field's value; nil when absent
	// ContentLength is the body's length, -1 when there is no
	// Content-Length (a chunked body, or none).
	ContentLength int64
	Chunked       bool
	// Close: Connection: close, or HTTP/1.0 without keep-alive.
	Close bool
	// Upgrade: Connection lists "upgrade" (WebSocket and the like).
	Upgrade bool
	// Expect: there is an Expect field.
	Expect bool
	// HeadLen is the head's length in bytes, CRLF CRLF included.
	HeadLen int
}

// Field returns the value of the first field named name (ASCII case
// insensitive), nil when there is none.
func (r *Request) Field(name string) []byte { return fieldValue(r.Fields, name) }

func (r *Request) reset() {
	fields := r.Fields[:0]
	*r = Request{Fields: fields, ContentLength: -1}
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Parse parses the request head at the start of buf into r. It returns
// ErrIncomplete when buf holds no complete head yet (the caller reads
// more, up to its limit), or an error wrapping ErrMalformed or
// ErrUnsupported for a head it refuses.
func Parse(buf []byte, r *Request) error {
	r.reset()
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && (i == 0 || buf[i-1] != '\r') {
			return malformed("bare LF") // refused early: it will never end in CRLF CRLF
		}
		return ErrIncomplete
	}
	r.HeadLen = end + 4
	head := buf[:end+2] // every line with its CRLF
	line, rest, err := nextLine(head)
	if err != nil {
		return err
	}
	if err := r.requestLine(line); err != nil {
		return err
	}
	var fr framingFields
	host := 0
	err = fr.parse(rest, &r.Fields, func(f Field) {
		switch {
		case EqualFold(f.Name, "host"):
			host++
			r.Host = f.Value
		case EqualFold(f.Name, "expect"):
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
	return r.framing(fr.cl, fr.te, host)
}

// framing applies the rules that need the whole head.
func (r *Request) framing(cl, te, host int) error {
	switch {
	case te > 0 && r.Minor == 0:
		return malformed("Transfer-Encoding on HTTP/1.0")
	case r.Minor == 1 && host != 1:
		return malformed("%d Host fields", host)
	case host == 1 && !validHost(r.Host):
		return malformed("Host %q", r.Host)
	}
	if te > 0 && cl > 0 {
		// RFC 9112 6.1: chunked rules, the length is dropped and the
		// connection closed after the response (as HAProxy does).
		r.ContentLength, r.Close = -1, true
	}
	return nil
}

var crlfcrlf = []byte("\r\n\r\n")

// nextLine splits off the first CRLF-terminated line of b (which ends in
// CRLF); a CR or LF inside the line is refused.
func nextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, malformed("bare LF")
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, malformed("bare CR")
	}
	return line, b[i+1:], nil
}

// requestLine parses method SP target SP HTTP/1.x.
func (r *Request) requestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return malformed("request line %q", line)
	}
	r.Method = line[:sp1]
	if !isToken(r.Method) {
		return malformed("method %q", r.Method)
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return malformed("request line %q", line)
	}
	r.Target = rest[:sp2]
	for _, c := range r.Target {
		if c <= ' ' || c >= 0x7f {
			return malformed("request target %q", r.Target)
		}
	}
	if !r.targetForm() {
		return malformed("request target %q", r.Target)
	}
	switch v := rest[sp2+1:]; string(v) {
	case "HTTP/1.1":
		r.Minor = 1
	case "HTTP/1.0":
		r.Minor = 0
	default:
		return malformed("version %q", v)
	}
	return nil
}

// targetForm reports a target in one of RFC 9112's four forms:
// origin-form, absolute-form (http or https), authority-form for CONNECT
// only and asterisk-form for OPTIONS only.
func (r *Request) targetForm() bool {
	t := r.Target
	switch {
	case t[0] == '/':
		return true
	case len(t) == 1 && t[0] == '*':
		return string(r.Method) == "OPTIONS"
	case string(r.Method) == "CONNECT":
		return validHost(t) && bytes.IndexByte(t, ':') > 0
	}
	i := bytes.Index(t, []byte("://"))
	return i > 0 && (EqualFold(t[:i], "http") || EqualFold(t[:i], "https")) && len(t) > i+3
}

// fieldLine parses name ":" OWS value OWS.
func fieldLine(line []byte) (Field, error) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			return Field{}, malformed("obs-fold")
		}
		return Field{}, malformed("field line %q", line)
	}
	name := line[:colon]
	if !isToken(name) {
		return Field{}, malformed("field name %q", name)
	}
	v := trimOWS(line[colon+1:])
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return Field{}, malformed("control byte in field %q", name)
		}
	}
	return Field{Name: name, Value: v}, nil
}

// parseContentLength reads a Content-Length value (1*DIGIT, up to 18
// digits, or a list of equal ones) given the length read so far (-1:
// none); a length that differs from cur is refused.
func parseContentLength(v []byte, cur int64) (int64, error) {
	for item := range bytes.SplitSeq(v, []byte(",")) {
		item = trimOWS(item)
		if len(item) == 0 || len(item) > 18 {
			return cur, malformed("Content-Length %q", v)
		}
		var n int64
		for _, c := range item {
			if c < '0' || c > '9' {
				return cur, malformed("Content-Length %q", v)
			}
			n = n*10 + int64(c-'0')
		}
		if cur >= 0 && cur != n {
			return cur, malformed("differing Content-Length")
		}
		cur = n
	}
	return cur, nil
}
