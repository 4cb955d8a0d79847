package h1client

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// header makes a parsed response head's Status ("200 OK") and Header,
// as http.ReadResponse would for the same bytes, in three allocations
// whatever the number of fields: one string holds the status and every
// name and value (names already canonical, the usual case, are
// substrings of it), one slice the first value of every name, and the
// map. te: the head has Transfer-Encoding (ParseResponse took only
// "chunked"), which moves to Response.TransferEncoding, and a Trailer
// field then announces the trailer's keys (returned, with nil values,
// as http.ReadResponse does) instead of being a field. Content-Length
// is one field with the parsed value, so that the header cannot say
// other than the framing: equal duplicates ParseResponse takes (as
// http.ReadResponse does for separate fields, not for "5, 5") become
// one, and "007" becomes "7" (http.ReadResponse keeps it as sent).
func header(p *h1parse.Response, te bool) (status string, h http.Header, trailer http.Header) {
	n := 4 + len(p.Reason)
	for _, f := range p.Fields {
		n += len(f.Name) + len(f.Value)
	}
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteByte(byte('0' + p.Status/100))
	sb.WriteByte(byte('0' + p.Status/10%10))
	sb.WriteByte(byte('0' + p.Status%10))
	if p.Reason != nil { // "200 " has an empty reason, "200" none
		sb.WriteByte(' ')
		sb.Write(p.Reason)
	}
	off := sb.Len()
	for _, f := range p.Fields {
		sb.Write(f.Name)
		sb.Write(f.Value)
	}
	s := sb.String()
	status = s[:off]
	h = make(http.Header, len(p.Fields))
	firsts := make([]string, len(p.Fields))
	seenCL := false
	for _, f := range p.Fields {
		name := s[off : off+len(f.Name)]
		off += len(f.Name)
		value := s[off : off+len(f.Value)]
		off += len(f.Value)
		k := textproto.CanonicalMIMEHeaderKey(name)
		switch k {
		case "Content-Length":
			if seenCL {
				continue
			}
			seenCL = true
			value = lengthValue(value, p.ContentLength)
		case "Transfer-Encoding":
			if te {
				continue
			}
		case "Trailer":
			if te {
				trailer = announced(trailer, value)
				continue
			}
		}
		if vv := h[k]; vv != nil {
			h[k] = append(vv, value)
			continue
		}
		firsts[0] = value
		h[k] = firsts[:1:1]
		firsts = firsts[1:]
	}
	// http.ReadResponse's fixPragmaCacheControl (RFC 7234 5.4).
	if pv := h["Pragma"]; len(pv) > 0 && pv[0] == "no-cache" && h["Cache-Control"] == nil {
		h["Cache-Control"] = []string{"no-cache"}
	}
	return status, h, trailer
}

// lengthValue is a Content-Length field's value as the parsed length n
// (v itself when it already is: no allocation).
func lengthValue(v string, n int64) string {
	var b [20]byte
	d := strconv.AppendInt(b[:0], n, 10)
	if v == string(d) {
		return v
	}
	return string(d)
}

// announced adds the keys a Trailer field lists to trailer, as
// http.ReadResponse does, but for those that cannot be trailers
// (http.ReadResponse fails the response for them; the strict parser
// has no rule about them, and RoundTrip refuses only what Send does),
// which are left out.
func announced(trailer http.Header, v string) http.Header {
	for key := range strings.SplitSeq(v, ",") {
		key = textproto.CanonicalMIMEHeaderKey(strings.Trim(key, " \t"))
		switch key {
		case "", "Transfer-Encoding", "Trailer", "Content-Length":
			continue
		}
		if trailer == nil {
			trailer = make(http.Header)
		}
		trailer[key] = nil
	}
	return trailer
}
