package h1parse

import (
	"bytes"
)

// Framing is how a response body is delimited (RFC 9112 6.3).
type Framing uint8

// The framings of a response body.
const (
	// NoBody: 1xx, 204, 304 and any response to HEAD.
	NoBody Framing = iota
	// Length: Content-Length bytes (possibly zero).
	Length
	// Chunked: Transfer-Encoding: chunked, read with ChunkReader.
	Chunked
	// UntilClose: neither field; the body ends when the backend closes.
	UntilClose
)

// Response is one parsed response head. Like Request, its slices point
// into the buffer given to ParseResponse, and one Response serves a whole
// connection without allocating.
type Response struct {
	Minor  int // HTTP/1.Minor: 0 or 1
	Status int // 100-999
	Reason []byte
	Fields []Field
	// ContentLength is the Content-Length field's value, -1 when there
	// is none; kept on bodyless responses (HEAD, 304), where it describes
	// the representation, not what follows.
	ContentLength int64
	Framing       Framing
	// Close: the connection cannot carry another exchange (Connection:
	// close, HTTP/1.0 without keep-alive, or a body delimited by close).
	Close bool
	// HeadLen is the head's length in bytes, CRLF CRLF included.
	HeadLen int
}

// Field returns the value of the first field named name (lower-case
// ASCII, matched case-insensitively), nil when there is none.
func (r *Response) Field(name string) []byte { return fieldValue(r.Fields, name) }

// reset empties r for the next head, keeping its field list's array.
func (r *Response) reset() {
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
func ParseResponse(buf []byte, r *Response, head bool) error {
	r.reset()
	i, err := r.statusLine(buf)
	if err != nil {
		return r.refusal(buf, err)
	}
	var fr framingFields
	if r.HeadLen, err = fr.parse(buf, i, &r.Fields, false); err != nil {
		r.HeadLen = 0
		return r.refusal(buf, err)
	}
	cl, te := fr.cl, fr.te
	r.ContentLength, r.Close = fr.length, fr.close
	if r.Minor == 0 && !fr.keepAlive {
		r.Close = true
	}
	switch {
	case cl > 0 && te > 0:
		return malformed("response with Content-Length and Transfer-Encoding")
	case te > 0 && r.Minor == 0:
		return malformed("Transfer-Encoding on HTTP/1.0")
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

// refusal is ParseResponse's answer to err, met before the head's end
// was seen: the answer of a parser that first looks for CRLF CRLF. With
// one in buf, the head is complete and err, from its first line refused,
// stands. Without, the head is incomplete (the caller reads more) unless
// its first line is complete and refused: a bare LF, or a status line
// judged now, so that a peer that is no HTTP server (or a banner) fails
// at once, not at the head timeout.
func (r *Response) refusal(buf []byte, err error) error {
	if bytes.Contains(buf, crlfcrlf) {
		return err
	}
	i := bytes.IndexByte(buf, '\n')
	switch {
	case i < 0:
	case i == 0 || buf[i-1] != '\r':
		return malformed("bare LF")
	default:
		if _, err := r.statusLine(buf[:i+1]); err != nil {
			return err
		}
	}
	return ErrIncomplete
}

// statusLine parses HTTP/1.x SP 3DIGIT [SP reason] CRLF at the start of
// buf and returns the offset after it. A missing reason (with or without
// its SP) is taken, as every client takes it; the reason may hold SP,
// HTAB and visible or obs-text bytes only (so no CR or LF).
func (r *Response) statusLine(buf []byte) (int, error) {
	if len(buf) < len("HTTP/1.1 200\r\n") || buf[8] != ' ' {
		return 0, errStatusLine
	}
	switch string(buf[:8]) {
	case "HTTP/1.1":
		r.Minor = 1
	case "HTTP/1.0":
		r.Minor = 0
	default:
		return 0, malformed("version %q", buf[:8])
	}
	code := buf[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return 0, malformed("status code %q", code)
		}
	}
	r.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if r.Status < 100 {
		return 0, malformed("status code %q", code)
	}
	i := 12
	if buf[i] == ' ' {
		i++
		for i < len(buf) && byteClass[buf[i]]&classValue != 0 {
			i++
		}
		r.Reason = buf[13:i]
	}
	if i+1 >= len(buf) || buf[i] != '\r' || buf[i+1] != '\n' {
		return 0, errStatusLine
	}
	return i + 2, nil
}
