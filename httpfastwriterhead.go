package smartproxy

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The fastWriter's heads and trailers (httpfastwriter.go): the status
// line, the framing fields and Date it sets itself, the handler's header
// and a relayed head's field lines.

func (w *fastWriter) hasTrailers() bool {
	if len(w.hdr["Trailer"]) > 0 {
		return true
	}
	for k := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// fastSkip are the fields the writer frames itself.
var fastSkip = []string{"Connection", "Content-Length", "Transfer-Encoding", "Trailer", "Keep-Alive"}

// appendHead appends a status line and the header; final heads get the
// framing fields and Date.
func (w *fastWriter) appendHead(b []byte, code int, final bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	if final {
		// Framing first, then Date, then the rest (net/http's order for
		// the usual fields).
		switch {
		case w.chunked:
			b = append(b, "Transfer-Encoding: chunked\r\n"...)
			for _, v := range w.hdr["Trailer"] {
				b = appendField(b, "Trailer", v)
			}
		case w.cl >= 0 && code != http.StatusNoContent:
			b = append(b, "Content-Length: "...)
			b = strconv.AppendInt(b, w.cl, 10)
			b = append(b, "\r\n"...)
		}
		if _, ok := w.hdr["Date"]; !ok && !w.rawDate {
			b = append(b, "Date: "...)
			b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
			b = append(b, "\r\n"...)
		}
	}
	for k, vs := range w.hdr {
		if final && slices.Contains(fastSkip, k) || strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	if !final {
		return append(b, "\r\n"...)
	}
	b = append(b, w.raw...)
	if w.closeAfter || w.fc.closing() {
		w.closeAfter = true
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// appendTrailers appends the trailer fields: those the Trailer field
// announced and those set with http.TrailerPrefix.
func (w *fastWriter) appendTrailers(b []byte) []byte {
	for _, list := range w.hdr["Trailer"] {
		for name := range strings.SplitSeq(list, ",") {
			k := http.CanonicalHeaderKey(strings.TrimSpace(name))
			if !httpguts.ValidTrailerHeader(k) {
				continue
			}
			for _, v := range w.hdr[k] {
				b = appendField(b, k, v)
			}
		}
	}
	for k, vs := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidTrailerHeader(name) {
			for _, v := range vs {
				b = appendField(b, name, v)
			}
		}
	}
	return b
}

// appendField appends "k: v\r\n", dropping a value with a line break or
// other byte no field may carry.
func appendField(b []byte, k, v string) []byte {
	if !httpguts.ValidHeaderFieldValue(v) {
		return b
	}
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}
