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

// reset empties r for the next head, keeping its field list's array.
func (r *Request) reset() {
	fields := r.Fields[:0]
	*r = Request{Fields: fields, ContentLength: -1}
}

// malformed is an error wrapping ErrMalformed with the reason.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// The refusals a head that is only incomplete meets on its way (a buffer that ends inside the
// start line or a field line), made once: the refusal that follows (requestRefusal,
// Response.refusal) turns them into ErrIncomplete, and a goroutine-path reader parses an
// incomplete head every time it asks for one, so formatting them there cost an fmt.Errorf and
// an allocation per request.
var (
	errMethod     = malformed("method")
	errTarget     = malformed("request target")
	errVersion    = malformed("version")
	errStatusLine = malformed("status line")
	errFieldLine  = malformed("field line")
)

// Parse parses the request head at the start of buf into r. It returns
// ErrIncomplete when buf holds no complete head yet (the caller reads
// more, up to its limit), or an error wrapping ErrMalformed or
// ErrUnsupported for a head it refuses.
//
// It reads the head in one pass, line by line, each byte checked once
// against its class (byteClass) and the head's end found where a line
// is empty, not by a search over the whole buffer first.
func Parse(buf []byte, r *Request) error {
	r.reset()
	i, err := r.requestLine(buf)
	if err != nil {
		return requestRefusal(buf, err)
	}
	var fr framingFields
	if r.HeadLen, err = fr.parse(buf, i, &r.Fields, true); err != nil {
		r.HeadLen = 0
		return requestRefusal(buf, err)
	}
	r.Host, r.Expect = fr.hostValue, fr.expect
	r.ContentLength, r.Chunked, r.Close, r.Upgrade = fr.length, fr.te > 0, fr.close, fr.upgrade
	if r.Minor == 0 && !fr.keepAlive {
		r.Close = true
	}
	return r.framing(fr.cl, fr.te, fr.host)
}

// requestRefusal is Parse's answer to err, met before the head's end was
// seen: the answer of a parser that first looks for CRLF CRLF. With one
// in buf, the head is complete and err, from its first line refused,
// stands; without, the head is incomplete (the caller reads more) unless
// its first line already ends in a bare LF, which no later byte can
// mend.
func requestRefusal(buf []byte, err error) error {
	if bytes.Contains(buf, crlfcrlf) {
		return err
	}
	if i := bytes.IndexByte(buf, '\n'); i >= 0 && (i == 0 || buf[i-1] != '\r') {
		return malformed("bare LF")
	}
	return ErrIncomplete
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

// requestLine parses method SP target SP HTTP/1.x CRLF at the start of
// buf and returns the offset after it: the method a token, the target
// free of control bytes, SP and bytes over 0x7e (so of CR and LF too).
func (r *Request) requestLine(buf []byte) (int, error) {
	i := 0
	for i < len(buf) && byteClass[buf[i]]&classTchar != 0 {
		i++
	}
	if i == 0 || i == len(buf) || buf[i] != ' ' {
		return 0, errMethod
	}
	r.Method = buf[:i]
	i++
	s := i
	for i < len(buf) && buf[i] > ' ' && buf[i] < 0x7f {
		i++
	}
	if i == s || i == len(buf) || buf[i] != ' ' {
		return 0, errTarget
	}
	r.Target = buf[s:i]
	if !r.targetForm() {
		return 0, malformed("request target %q", r.Target)
	}
	i++
	if len(buf)-i < len("HTTP/1.1\r\n") {
		return 0, errVersion
	}
	switch v := buf[i : i+10]; string(v) {
	case "HTTP/1.1\r\n":
		r.Minor = 1
	case "HTTP/1.0\r\n":
		r.Minor = 0
	default:
		return 0, malformed("version %q", v)
	}
	return i + 10, nil
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
