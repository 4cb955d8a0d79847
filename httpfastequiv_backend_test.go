package smartproxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The wire side of the fast-path equivalence tests (httpfastequiv_test.go):
// a reader of HTTP/1.1 messages as they cross a socket, for the backend's
// view of requests and the client's view of responses, and a scripted
// backend that records every request it parses and answers the raw bytes
// its X-Script header names. The reader is strict where the proxy must be
// (CRLF line ends, no obs-fold, one framing) and reports a violation as
// errWire, so a proxy that forwards ambiguous bytes fails the comparison
// instead of being read the way it happens to suit.

// wireMsg is one HTTP/1.1 message as it crossed a socket.
type wireMsg struct {
	line     string   // the request or status line
	fields   []string // "name: value", name lower-cased, value trimmed, in arrival order
	framing  string   // "length", "chunked", "close" or "none"
	body     string   // the body with any chunked framing removed
	trailers []string // as fields, of a chunked body
	interim  []string // the 1xx responses before a final one, each its line and fields
	conn     int      // the backend's: which of its connections (1, 2, ...) carried the request
}

// get returns the values of the fields named name (lower case).
func (m *wireMsg) get(name string) []string {
	var vs []string
	for _, f := range m.fields {
		if n, v, _ := strings.Cut(f, ": "); n == name {
			vs = append(vs, v)
		}
	}
	return vs
}

// status is a response's status code, 0 when the line has none.
func (m *wireMsg) status() int {
	_, rest, _ := strings.Cut(m.line, " ")
	code, _ := strconv.Atoi(strings.SplitN(rest, " ", 2)[0])
	return code
}

// errWire marks bytes that are not one unambiguous HTTP/1.1 message.
var errWire = errors.New("malformed on the wire")

// wireLine reads one CRLF-terminated line without its CRLF: io.EOF when
// the stream ended before it, io.ErrUnexpectedEOF when inside it.
func wireLine(br *bufio.Reader) (string, error) {
	s, err := br.ReadString('\n')
	switch {
	case err != nil && s == "":
		return "", io.EOF
	case err != nil:
		return s, io.ErrUnexpectedEOF
	case !strings.HasSuffix(s, "\r\n"):
		return s, fmt.Errorf("%w: bare LF after %q", errWire, s)
	}
	s = s[:len(s)-2]
	if strings.ContainsRune(s, '\r') {
		return s, fmt.Errorf("%w: bare CR in %q", errWire, s)
	}
	return s, nil
}

// readWireHead reads a start line and its fields into m.
func readWireHead(br *bufio.Reader, m *wireMsg) error {
	line, err := wireLine(br)
	if err != nil {
		return err
	}
	m.line, m.fields = line, nil
	return readWireFields(br, &m.fields)
}

// readWireFields reads header (or trailer) fields up to the empty line.
func readWireFields(br *bufio.Reader, fields *[]string) error {
	for {
		l, err := wireLine(br)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("fields: %w", err)
		}
		if l == "" {
			return nil
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !isToken(name) {
			return fmt.Errorf("%w: field line %q (obs-fold or bad name)", errWire, l)
		}
		*fields = append(*fields, strings.ToLower(name)+": "+strings.Trim(value, " \t"))
	}
}

// readWireRequest reads one request; io.EOF when the stream ended
// cleanly before it.
func readWireRequest(br *bufio.Reader) (wireMsg, error) {
	var m wireMsg
	if err := readWireHead(br, &m); err != nil {
		return m, err
	}
	return m, readWireBody(br, &m, false, false)
}

// readWireResponse reads the response to a request with method, the 1xx
// responses before it into interim.
func readWireResponse(br *bufio.Reader, method string) (wireMsg, error) {
	var m wireMsg
	for {
		if err := readWireHead(br, &m); err != nil {
			return m, err
		}
		code := m.status()
		if code < 100 || code > 999 || !strings.HasPrefix(m.line, "HTTP/1.1 ") && !strings.HasPrefix(m.line, "HTTP/1.0 ") {
			return m, fmt.Errorf("%w: status line %q", errWire, m.line)
		}
		if code >= 200 || code == 101 {
			noBody := method == "HEAD" || code == 204 || code == 304 || code == 101
			return m, readWireBody(br, &m, true, noBody)
		}
		m.interim = append(m.interim, m.line+" | "+strings.Join(m.fields, " | "))
	}
}

// readWireBody reads m's body as its framing says; a response without a
// length runs to the close. A body cut short keeps what arrived.
func readWireBody(br *bufio.Reader, m *wireMsg, response, noBody bool) error {
	tes, cls := m.get("transfer-encoding"), m.get("content-length")
	switch {
	case noBody:
		m.framing = "none"
		return nil
	case len(tes) > 0 && len(cls) > 0:
		return fmt.Errorf("%w: both Content-Length %q and Transfer-Encoding %q", errWire, cls, tes)
	case len(tes) > 0:
		if len(tes) != 1 || tes[0] != "chunked" {
			return fmt.Errorf("%w: transfer-encoding %q", errWire, tes)
		}
		m.framing = "chunked"
		return readWireChunked(br, m)
	case len(cls) > 1:
		return fmt.Errorf("%w: content-length %q", errWire, cls)
	case len(cls) == 1:
		n, err := strconv.ParseUint(cls[0], 10, 40)
		if err != nil || cls[0][0] == '+' {
			return fmt.Errorf("%w: content-length %q", errWire, cls[0])
		}
		m.framing = "length"
		b := make([]byte, n)
		k, err := io.ReadFull(br, b)
		m.body = string(b[:k])
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	case response:
		m.framing = "close"
		b, err := io.ReadAll(br)
		m.body = string(b)
		return err
	}
	m.framing = "none"
	return nil
}

// readWireChunked reads a chunked body and its trailer fields.
func readWireChunked(br *bufio.Reader, m *wireMsg) error {
	var body strings.Builder
	defer func() { m.body = body.String() }()
	for {
		line, err := wireLine(br)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("chunk size: %w", err)
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseUint(size, 16, 40)
		if err != nil || strings.ContainsAny(size, "+-xX ") {
			return fmt.Errorf("%w: chunk size %q", errWire, line)
		}
		if n == 0 {
			return readWireFields(br, &m.trailers)
		}
		if _, err := io.CopyN(&body, br, int64(n)); err != nil {
			return io.ErrUnexpectedEOF
		}
		if crlf, err := wireLine(br); err != nil || crlf != "" {
			return fmt.Errorf("%w: chunk data not followed by CRLF", errWire)
		}
	}
}

// endOf names how a read ended, the same for the same way on any run.
func endOf(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "closed between responses"
	case errors.Is(err, io.ErrUnexpectedEOF) || isClosedErr(err):
		return "closed inside a response"
	case errors.Is(err, errWire):
		return "malformed: " + err.Error()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error: " + err.Error()
}

// shortened keeps a long field readable in a diff: its start, length
// and a hash of the whole.
func shortened(f string) string {
	if len(f) <= 200 {
		return f
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(f))
	return fmt.Sprintf("%s... (%d bytes, fnv %x)", f[:60], len(f), h.Sum64())
}

// rawReq is a request's bytes: fields are "Name: value" lines.
func rawReq(method, target, host, body string, fields ...string) string {
	s := method + " " + target + " HTTP/1.1\r\n"
	if host != "" {
		s += "Host: " + host + "\r\n"
	}
	for _, f := range fields {
		s += f + "\r\n"
	}
	return s + "\r\n" + body
}

// equivScript is a backend's raw answer; close: the backend closes the
// connection after it.
type equivScript struct {
	raw   string
	close bool
}

// equivScripts are the answers the X-Script request header picks;
// requests without it get "ok" ("ok-head" for HEAD). The default carries
// what the proxy must treat as on any response: a hop-by-hop field named
// in Connection, Keep-Alive, a duplicate field and a Server to delete.
var equivScripts = map[string]equivScript{
	"ok": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: scripted\r\nX-Dup: 1\r\nX-Dup: 2\r\n" +
		"Connection: X-Hop\r\nX-Hop: gone\r\nKeep-Alive: timeout=5\r\nContent-Type: text/plain\r\n\r\nok"},
	"ok-head":  {raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: scripted\r\nContent-Type: text/plain\r\n\r\n"},
	"chunked":  {raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"},
	"close":    {raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", close: true},
	"close-cl": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye", close: true},
	"no-ct":    {raw: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"},
	"204":      {raw: "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"},
	"304":      {raw: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n"},
	"404":      {raw: "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"},
	"1xx": {raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"},
	"cl-te": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	"dup-cl": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello\r\n\r\n",
		close: true},
	"bare-lf":            {raw: "HTTP/1.1 200 OK\nContent-Length: 5\nX-A: b\n\nhello"},
	"obs-fold":           {raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n c\r\n\r\nhello"},
	"short":              {raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", close: true},
	"reason":             {raw: "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n"},
	"noreason":           {raw: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"},
	"299":                {raw: "HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n"},
	"599":                {raw: "HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n"},
	"101":                {raw: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", close: true},
	"date":               {raw: "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"},
	"417":                {raw: "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", close: true},
	"many1xx":            {raw: strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n", 10) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	"undeclared-trailer": {raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Late: 1\r\n\r\n"},
	"quiet-close":        {raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nquiet", close: true},
	"empty":              {raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	"gzip":               {raw: "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\nVary: Accept-Encoding\r\n\r\n\x1f\x8b\x08\x00"},
	"big": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 300000\r\nContent-Type: application/octet-stream\r\n\r\n" +
		strings.Repeat("0123456789", 30000)},
	"big-chunked": {raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n" +
		strings.Repeat("2710\r\n"+strings.Repeat("abcdefghij", 1000)+"\r\n", 30) + "0\r\n\r\n"},
	"set-cookie": {raw: "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n" +
		"Cache-Control: no-cache\r\nCache-Control: private\r\n\r\n"},
}

// equivBackend is a raw backend that records each request it parses and
// answers the script the request names.
type equivBackend struct {
	*backend
	mu    sync.Mutex
	reqs  []wireMsg
	errs  []string     // requests it could not parse: the proxy framed them badly
	conns atomic.Int64 // connections served so far
}

func startEquivBackend(t *testing.T) *equivBackend { return startEquivBackendOn(t, nil) }

// startEquivBackendOn is startEquivBackend speaking TLS with cert, when
// set (HTTP/1.1 only, as ALPN says).
func startEquivBackendOn(t *testing.T, cert *tls.Certificate) *equivBackend {
	eb := &equivBackend{}
	eb.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		if cert != nil {
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}})
			if err := tc.Handshake(); err != nil {
				return
			}
			c = tc
		}
		conn := int(eb.conns.Add(1))
		br := bufio.NewReader(c)
		for {
			m, err := readWireRequest(br)
			if errors.Is(err, io.EOF) {
				return
			}
			eb.mu.Lock()
			if err != nil {
				eb.errs = append(eb.errs, err.Error())
			} else {
				m.conn = conn
				eb.reqs = append(eb.reqs, m)
			}
			eb.mu.Unlock()
			if err != nil {
				return
			}
			name := "ok"
			if v := m.get("x-script"); len(v) > 0 {
				name = v[0]
			} else if strings.HasPrefix(m.line, "HEAD ") {
				name = "ok-head"
			}
			s, ok := equivScripts[name]
			if !ok {
				s = equivScripts["404"]
			}
			if _, err := io.WriteString(c, s.raw); err != nil || s.close {
				return
			}
		}
	})
	return eb
}

// take returns and forgets what the backend recorded so far.
func (eb *equivBackend) take() ([]wireMsg, []string) {
	eb.mu.Lock()
	defer eb.mu.Unlock()
	reqs, errs := eb.reqs, eb.errs
	eb.reqs, eb.errs = nil, nil
	return reqs, errs
}
