package smartproxy

import (
	"bytes"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// streamKind is what the first bytes of a connection show.
type streamKind uint8

const (
	streamOther streamKind = iota // neither TLS nor HTTP: route without domain
	streamTLS                     // a TLS record (0x16): read the ClientHello
	streamHTTP                    // an HTTP/1.x request line or the h2c preface
	streamNone                    // nothing usable arrived: close
)

// sniffLineCap bounds how many bytes the sniffer reads while the first
// line is still undecided (leading empty lines and a method token with no
// space after it yet). Past it the stream is taken for HTTP, so the HTTP
// layer refuses it: no HTTP parser accepts a 4 KiB method.
const sniffLineCap = 4 << 10

// httpVerdict is what the first line of a stream shows.
type httpVerdict uint8

const (
	verdictOther     httpVerdict = iota // not HTTP: may be forwarded raw
	verdictHTTP                         // a request line: the HTTP layer takes it
	verdictLookalike                    // not a request line, but some lenient parser would take it for one
)

// classifyHTTP says what b's first line is, and whether that is decided
// yet. skip is the number of leading CR and LF bytes, the empty lines
// RFC 9112 §2.2 tells a server to ignore before a request line (Go's
// server refuses them on a connection's first request, so the caller
// drops them).
//
// A request line (requestLine) starts with any method token (RFC 9110
// tchars, any case: FOO, QUERY, get) and SP or HT, and either holds
// "HTTP/" in any case or the method is GET (HTTP/0.9); leading empty
// lines alone, or a first line longer than sniffLineCap, count too. The
// HTTP layer parses it strictly and answers 400 to what it refuses.
//
// What is not a request line may be forwarded as raw TCP, past every
// per-request check. So where routes check requests (strict), a line
// that a lenient parser might still read as a request (lenientRequest:
// Node takes RTSP/ and ICE/ versions, old servers HTTP/0.9 with any
// method, Python's http.server any whitespace around the words) is a
// lookalike, which the caller closes. Elsewhere (not strict) nothing can
// be bypassed, and line protocols whose commands take arguments ("PING
// x", "SET k v") are forwarded.
func classifyHTTP(b []byte, strict bool) (v httpVerdict, decided bool, skip int) {
	isHTTP, decided, skip := requestLine(b)
	switch {
	case !decided:
		return verdictOther, false, skip
	case isHTTP:
		return verdictHTTP, true, skip
	case !strict:
		return verdictOther, true, 0
	}
	switch lookalike, decided := lenientRequest(b); {
	case !decided:
		return verdictOther, false, 0
	case lookalike:
		return verdictLookalike, true, 0
	}
	return verdictOther, true, 0
}

// requestLine is classifyHTTP's rule for a request line (see there).
func requestLine(b []byte) (isHTTP, decided bool, skip int) {
	for skip < len(b) && (b[skip] == '\r' || b[skip] == '\n') {
		skip++
	}
	i := skip
	for i < len(b) && h1parse.IsTokenChar(b[i]) {
		i++
	}
	switch {
	case i == len(b):
		if len(b) >= sniffLineCap {
			return true, true, 0 // let the HTTP layer refuse it, empty lines and all
		}
		return false, false, skip
	case i == skip || b[i] != ' ' && b[i] != '\t':
		return false, true, 0
	case i-skip == 3 && b[skip]|0x20 == 'g' && b[skip+1]|0x20 == 'e' && b[skip+2]|0x20 == 't':
		return true, true, skip
	}
	line := b[i:]
	end := bytes.IndexByte(line, '\n')
	if end >= 0 {
		line = line[:end]
	}
	switch {
	case hasHTTPVersion(line):
		return true, true, skip
	case end >= 0:
		return false, true, 0
	case len(b) >= sniffLineCap:
		return true, true, skip
	}
	return false, false, skip
}

// lenientRequest reports whether b starts like a request line to the most
// lenient parser we know: optional whitespace (isLenientSpace), a token,
// then whitespace other than CR and LF — whatever follows.
func lenientRequest(b []byte) (lookalike, decided bool) {
	start := 0
	for start < len(b) && isLenientSpace(b[start]) {
		start++
	}
	i := start
	for i < len(b) && h1parse.IsTokenChar(b[i]) {
		i++
	}
	switch {
	case i == len(b):
		return len(b) >= sniffLineCap, len(b) >= sniffLineCap
	case i == start:
		return false, true
	}
	return isLenientSpace(b[i]) && b[i] != '\r' && b[i] != '\n', true
}

// isLenientSpace reports a byte that some HTTP parser treats as
// whitespace around the request line's words (Python's str.split on a
// Latin-1 line: SP, HT, LF, VT, FF, CR, 0x1c-0x1f, 0x85, 0xa0).
func isLenientSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f, 0x85, 0xa0:
		return true
	}
	return false
}

// hasHTTPVersion reports whether line holds "HTTP/" in any case. It looks
// for the slash with IndexByte, so a line trickled in byte by byte costs
// little to rescan on every arrival.
func hasHTTPVersion(line []byte) bool {
	for i := 4; i < len(line); {
		j := bytes.IndexByte(line[i:], '/')
		if j < 0 {
			return false
		}
		i += j
		if w := line[i-4 : i]; w[0]|0x20 == 'h' && w[1]|0x20 == 't' && w[2]|0x20 == 't' && w[3]|0x20 == 'p' {
			return true
		}
		i++
	}
	return false
}

// sniffStream waits up to wait for the first bytes of peek and says what
// they are. With http false only TLS is told apart, on the first byte.
// Bytes read stay buffered in peek, except the empty lines before an HTTP
// request line, which are dropped.
//
// A lookalike (see classifyHTTP) returns streamNone: the caller closes it.
// On timeout or EOF it returns streamNone when nothing arrived. When bytes
// arrived but do not decide yet (a method token still being typed), it
// returns streamNone too if strict is set — the stream may become an
// HTTP request, and a port whose routes check requests must never forward
// that raw — and streamOther otherwise.
func sniffStream(peek *forwarding.PeekConn, wait time.Duration, http, tls, strict bool) streamKind {
	_ = peek.SetReadDeadline(time.Now().Add(wait))
	defer func() { _ = peek.SetReadDeadline(time.Time{}) }()
	for {
		b := peek.Buffered()
		if len(b) > 0 {
			if tls && b[0] == 0x16 {
				return streamTLS
			}
			if !http {
				return streamOther
			}
			if v, decided, skip := classifyHTTP(b, strict); decided {
				switch v {
				case verdictHTTP:
					peek.Discard(skip)
					return streamHTTP
				case verdictLookalike:
					peek.Discard(len(b))
					peek.Release()
					return streamNone
				}
				return streamOther
			}
		}
		if err := peek.Fill(len(b) + 1); err != nil {
			if len(peek.Buffered()) > 0 && !strict {
				return streamOther
			}
			peek.Discard(len(peek.Buffered()))
			peek.Release()
			return streamNone
		}
	}
}
