package smartproxy

import (
	"bytes"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// streamKind is what the first bytes of a connection show.
type streamKind uint8

const (
	streamOther streamKind = iota // neither TLS nor HTTP: route without domain
	streamTLS                     // a TLS record (0x16): read the ClientHello
	streamHTTP                    // an HTTP/1.x request line or the h2c preface
	streamNone                    // nothing usable arrived: close
)

// httpPrefixes are the starts of the streams the HTTP layer takes: a known
// method token and a space, or the HTTP/2 prior-knowledge preface. Any
// other token is not taken for HTTP, so line protocols whose commands
// happen to be upper-case words keep being forwarded as TCP.
var httpPrefixes = [][]byte{
	[]byte("GET "), []byte("HEAD "), []byte("POST "), []byte("PUT "), []byte("PATCH "),
	[]byte("DELETE "), []byte("OPTIONS "), []byte("TRACE "), []byte("CONNECT "),
	[]byte("PROPFIND "), []byte("PROPPATCH "), []byte("MKCOL "), []byte("COPY "), []byte("MOVE "),
	[]byte("LOCK "), []byte("UNLOCK "), []byte("REPORT "), []byte("SEARCH "),
	[]byte("PRI * HTTP/2.0"),
}

// classifyHTTP reports whether b starts like HTTP (isHTTP) and whether
// that is decided yet (b could still become an HTTP prefix).
func classifyHTTP(b []byte) (isHTTP, decided bool) {
	possible := false
	for _, p := range httpPrefixes {
		if len(b) >= len(p) {
			if bytes.HasPrefix(b, p) {
				return true, true
			}
		} else if bytes.HasPrefix(p, b) {
			possible = true
		}
	}
	return false, !possible
}

// sniffStream waits up to wait for the first bytes of peek and says what
// they are. With http false only TLS is told apart, on the first byte.
// Bytes read stay buffered in peek. On timeout or EOF it returns
// streamNone when nothing arrived and streamOther otherwise.
func sniffStream(peek *forwarding.PeekConn, wait time.Duration, http, tls bool) streamKind {
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
			if isHTTP, decided := classifyHTTP(b); decided {
				if isHTTP {
					return streamHTTP
				}
				return streamOther
			}
		}
		if err := peek.Fill(len(b) + 1); err != nil {
			if len(peek.Buffered()) > 0 {
				return streamOther
			}
			peek.Release()
			return streamNone
		}
	}
}
