package h1parse

import (
	"bytes"
	"fmt"
)

// framingFields is what a head's fields say about its framing and its
// connection: one reading of Content-Length, Transfer-Encoding and
// Connection for requests (Parse) and responses (ParseResponse), so the
// two directions cannot come to read them differently; and, for a
// request, its Host and Expect fields.
type framingFields struct {
	cl, te    int   // how many Content-Length and Transfer-Encoding fields
	length    int64 // the Content-Length, -1 when there is none
	keepAlive bool  // Connection lists keep-alive
	close     bool  // Connection lists close
	upgrade   bool  // Connection lists upgrade
	host      int   // how many Host fields (requests only)
	hostValue []byte
	expect    bool // there is an Expect field (requests only)
}

// parse reads the field lines of buf from offset i, up to and including
// the empty line that ends the head, into *fields, noting the framing
// fields (and for a request, Host and Expect) in fr, and
// returns the head's length. It refuses a line that is no field (a CR or
// LF inside a line among them), more than MaxFields fields, a
// Content-Length that is not one non-negative number (or a list of equal
// ones), and any Transfer-Encoding but one "chunked"; the first line
// refused decides the error. Running out of buf is ErrIncomplete, and
// the caller (refusal) decides whether an error found before the end of
// the head was seen stands or the head is only incomplete.
func (fr *framingFields) parse(buf []byte, i int, fields *[]Field, request bool) (int, error) {
	fr.length = -1
	for {
		if i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n' {
			return i + 2, nil
		}
		if len(*fields) == MaxFields {
			return 0, malformed("more than %d fields", MaxFields)
		}
		f, next, err := scanField(buf, i)
		if err != nil {
			return 0, err
		}
		i = next
		*fields = append(*fields, f)
		// The names that matter have distinct lengths: most fields are
		// passed over on their length alone.
		switch len(f.Name) {
		case len("content-length"):
			if isContentLength(f.Name) {
				fr.cl++
				if fr.length, err = contentLength(f.Value, fr.length); err != nil {
					return 0, err
				}
			}
		case len("transfer-encoding"):
			if tokenIs(f.Name, "transfer-encoding") {
				fr.te++
				if fr.te > 1 || !EqualFold(f.Value, "chunked") {
					return 0, fmt.Errorf("%w: Transfer-Encoding %q", ErrUnsupported, f.Value)
				}
			}
		case len("connection"):
			if tokenIs(f.Name, "connection") {
				fr.connection(f.Value)
			}
		case len("host"):
			if request && tokenIs(f.Name, "host") {
				fr.host++
				fr.hostValue = f.Value
			}
		case len("expect"):
			if request && tokenIs(f.Name, "expect") {
				fr.expect = true
			}
		}
	}
}

// scanField parses the field line at buf[i:], name ":" OWS value OWS
// CRLF, in one pass, and returns it with the offset after its CRLF. A
// name byte that is no tchar (SP or HTAB first: obs-fold), a value byte
// that is a control byte but HTAB (CR and LF included), or a CR not
// followed by LF is ErrMalformed; a line that runs to the end of buf is
// ErrIncomplete.
func scanField(buf []byte, i int) (Field, int, error) {
	s := i
	for {
		for i+8 <= len(buf) {
			m := notNameCommon(load(buf[i:]))
			i += firstMarked(m)
			if m != 0 {
				break
			}
		}
		if i == len(buf) || byteClass[buf[i]]&classTchar == 0 {
			break
		}
		i++
	}
	switch {
	case i == len(buf):
		return Field{}, 0, ErrIncomplete
	case buf[i] != ':' || i == s:
		return Field{}, 0, errFieldLine
	}
	name := buf[s:i]
	i++
	for i < len(buf) && (buf[i] == ' ' || buf[i] == '\t') {
		i++
	}
	vs := i
	for {
		for i+8 <= len(buf) {
			m := valueCtl(load(buf[i:]))
			i += firstMarked(m)
			if m != 0 {
				break
			}
		}
		if i == len(buf) || byteClass[buf[i]]&classValue == 0 {
			break
		}
		i++
	}
	switch {
	case i+1 >= len(buf):
		if i < len(buf) && buf[i] != '\r' {
			return Field{}, 0, malformed("control byte in field %q", name)
		}
		return Field{}, 0, ErrIncomplete
	case buf[i] != '\r' || buf[i+1] != '\n':
		return Field{}, 0, malformed("control byte in field %q", name)
	}
	ve := i
	for ve > vs && (buf[ve-1] == ' ' || buf[ve-1] == '\t') {
		ve--
	}
	return Field{Name: name, Value: buf[vs:ve]}, i + 2, nil
}

// contentLength reads a Content-Length value given the length read so
// far (-1: none): the usual single number directly, anything else (a
// list, a refusal) by parseContentLength.
func contentLength(v []byte, cur int64) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return parseContentLength(v, cur)
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return parseContentLength(v, cur)
		}
		n = n*10 + int64(c-'0')
	}
	if cur >= 0 && cur != n {
		return cur, malformed("differing Content-Length")
	}
	return n, nil
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

// connection notes the tokens of a Connection field.
func (fr *framingFields) connection(v []byte) {
	for tok := range bytes.SplitSeq(v, []byte(",")) {
		tok = trimOWS(tok)
		switch {
		case EqualFold(tok, "close"):
			fr.close = true
		case EqualFold(tok, "upgrade"):
			fr.upgrade = true
		case EqualFold(tok, "keep-alive"):
			fr.keepAlive = true
		}
	}
}
