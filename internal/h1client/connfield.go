package h1client

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// http.ReadResponse deletes a response's Connection field when it holds
// "close" (it reports Response.Close instead), and with it the names of
// the other fields the backend marked hop-by-hop ("Connection: close,
// X-Internal"): a reverse proxy could then not remove them (RFC 9110
// 7.6.1) and relayed X-Internal to the client. So RoundTrip peeks at each
// raw head before ReadResponse parses it and puts the Connection lines
// back into the parsed header when ReadResponse took them out.

// errHeadUnseen: a head too large to be peeked at whole said close, and
// which fields it named hop-by-hop is unknown.
var errHeadUnseen = errors.New("response head larger than the read buffer with Connection: close")

// peekConnection waits for the next head to be buffered whole in br and
// returns the values of its Connection field lines (nil when it has
// none), without consuming anything; seen is false when the head does
// not fit in br's buffer. A read error is returned as ReadResponse would
// report it (io.EOF as io.ErrUnexpectedEOF).
func peekConnection(br *bufio.Reader) (vals []string, seen bool, err error) {
	n, from := 1, 0
	for {
		if _, err := br.Peek(n); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, false, nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, false, err
		}
		b, _ := br.Peek(br.Buffered())
		if end := headEnd(b, from); end >= 0 {
			return connectionValues(b[:end]), true, nil
		}
		n, from = len(b)+1, max(0, len(b)-2)
	}
}

// headEnd returns the length of the head at the start of b up to its
// empty line (CRLF or, as ReadResponse accepts it, bare LF), -1 when b
// does not hold all of it yet; from is where the search may start (no
// end before it).
func headEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
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
		line = bytes.TrimSuffix(line, []byte("\r"))
		if first { // the status line
			first = false
			continue
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if inConn {
				vals[len(vals)-1] += " " + string(bytes.Trim(line, " \t"))
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		inConn = ok && bytes.EqualFold(name, []byte("Connection"))
		if inConn {
			vals = append(vals, string(bytes.Trim(value, " \t")))
		}
	}
	return vals
}

// restoreConnection puts vals, a head's Connection values
// (peekConnection), back into resp's header when ReadResponse deleted
// them (an HTTP/1.1 head that said close; HTTP/1.0 ones keep theirs). A
// head that could not be seen whole and may have said close is refused
// (a close-delimited body's head over 16 KiB too, as the fast path
// refuses every head over 16 KiB): the fields it named hop-by-hop would
// reach the client.
func restoreConnection(resp *http.Response, vals []string, seen bool, addr string) error {
	if _, ok := resp.Header["Connection"]; ok || !resp.Close || !resp.ProtoAtLeast(1, 1) {
		return nil
	}
	if !seen {
		_ = resp.Body.Close()
		return fmt.Errorf("backend %s: %w", addr, errHeadUnseen)
	}
	if vals != nil {
		resp.Header["Connection"] = vals
	}
	return nil
}
