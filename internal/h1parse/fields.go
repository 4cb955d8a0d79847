package h1parse

import (
	"bytes"
	"fmt"
)

// framingFields is what a head's fields say about its framing and its
// connection: one reading of Content-Length, Transfer-Encoding and
// Connection for requests (Parse) and responses (ParseResponse), so the
// two directions cannot come to read them differently.
type framingFields struct {
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
func (fr *framingFields) parse(head []byte, fields *[]Field, other func(Field)) error {
	fr.length = -1
	for len(head) > 0 {
		line, rest, err := nextLine(head)
		if err != nil {
			return err
		}
		head = rest
		if len(*fields) == MaxFields {
			return malformed("more than %d fields", MaxFields)
		}
		f, err := fieldLine(line)
		if err != nil {
			return err
		}
		*fields = append(*fields, f)
		switch {
		case EqualFold(f.Name, "content-length"):
			fr.cl++
			if fr.length, err = parseContentLength(f.Value, fr.length); err != nil {
				return err
			}
		case EqualFold(f.Name, "transfer-encoding"):
			fr.te++
			if fr.te > 1 || !EqualFold(f.Value, "chunked") {
				return fmt.Errorf("%w: Transfer-Encoding %q", ErrUnsupported, f.Value)
			}
		case EqualFold(f.Name, "connection"):
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
