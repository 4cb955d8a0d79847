package smartproxy

import (
	"bytes"
	"errors"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// http.ReadResponse deletes a response's Connection field when it holds
// "close" (it reports Response.Close instead), and with it the names of
// the other fields the backend marked hop-by-hop ("Connection: close,
// X-Internal"): a reverse proxy could then not remove them (RFC 9110
// 7.6.1) and relayed X-Internal to the client. h1client's RoundTrip keeps
// the field (it parses with h1parse); for http.Transport's responses,
// the backend tap (httpbackendtap.go) records each raw head and puts the
// Connection lines back into the parsed header when ReadResponse took
// them out (finalConnection, restoreConnection).

// errHeadUnseen: a response head that may have said close (Connection:
// close, or a close-delimited body) could not be seen whole, so which
// fields it named hop-by-hop is unknown (restoreConnection).
var errHeadUnseen = errors.New("response head not seen whole with Connection: close")

// headEnd returns the length of the head at the start of b up to its
// empty line (CRLF or, as ReadResponse accepts it, bare LF), -1 when b
// does not hold all of it yet.
func headEnd(b []byte) int {
	for i := range b {
		if b[i] != '\n' || i == 0 {
			continue
		}
		if b[i-1] == '\n' {
			return i + 1
		}
		if b[i-1] == '\r' && i >= 2 && b[i-2] == '\n' {
			return i + 1
		}
	}
	return -1
}

// finalConnection returns the values of the Connection field lines of
// the final (not 1xx) response head in b, the bytes a backend connection
// gave from the start of a response on, 1xx heads first; ok is false
// when b does not hold that head whole. For a caller whose responses
// http.ReadResponse parsed (http.Transport's) and that recorded the raw
// bytes: see the top of this file for why.
func finalConnection(b []byte) (vals []string, ok bool) {
	for {
		end := headEnd(b)
		if end < 0 {
			return nil, false
		}
		// A 1xx is an interim head, unless 101 (final: the connection is
		// another protocol's after it). The status is read as ReadResponse
		// reads it: after the first space, more spaces trimmed ("HTTP/1.1
		// 103" with two spaces is its 103 too).
		_, st, _ := bytes.Cut(b[:end], []byte(" "))
		st = bytes.TrimLeft(st, " ")
		if len(st) >= 3 && st[0] == '1' && !(st[1] == '0' && st[2] == '1') {
			b = b[end:]
			continue
		}
		return connectionValues(b[:end]), true
	}
}

// asciiSpace is what textproto trims from a field line.
const asciiSpace = " \t\r\n"

// connectionValues returns the values of head's Connection field lines,
// an obs-fold continuation joined with a space (as ReadResponse joins
// it); nil, without allocating, when there is none.
func connectionValues(head []byte) []string {
	var vals []string
	inConn := false
	first := true
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		if first { // the status line
			first = false
			continue
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if inConn { // textproto's join: one space, then the value's left trimmed
				v := vals[len(vals)-1] + " " + string(bytes.Trim(line, asciiSpace))
				vals[len(vals)-1] = strings.TrimLeft(v, " \t")
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		inConn = ok && bytes.EqualFold(name, []byte("Connection"))
		if inConn {
			vals = append(vals, string(bytes.Trim(value, asciiSpace)))
		}
	}
	return vals
}

// restoreConnection puts vals, a head's Connection values
// (finalConnection), back into
// resp's header when ReadResponse deleted them (an HTTP/1.1 head that said
// close; HTTP/1.0 ones keep theirs). A head that was not seen whole and
// may have said close is refused with errHeadUnseen, its body left to
// the caller to close (a close-delimited body's head over 16 KiB too, as the fast path refuses
// every head over 16 KiB): the fields it named hop-by-hop would reach
// the client.
func restoreConnection(resp *http.Response, vals []string, seen bool) error {
	if _, ok := resp.Header["Connection"]; ok || !resp.Close || !resp.ProtoAtLeast(1, 1) {
		return nil
	}
	if !seen {
		return errHeadUnseen
	}
	// ReadResponse deleted the field because it said close, unless the
	// body is delimited by the close: values without close are another
	// head's (the recording and the parse disagree), and their names unknown.
	if (resp.ContentLength >= 0 || resp.TransferEncoding != nil) && !httpguts.HeaderValuesContainsToken(vals, "close") {
		return errHeadUnseen
	}
	if vals != nil {
		resp.Header["Connection"] = vals
	}
	return nil
}
