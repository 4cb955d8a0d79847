package forwarding

import (
	"errors"
	"fmt"
)

// SniffClientHello reads from c until a whole ClientHello is buffered (or maxBytes would be
// exceeded) and parses it. The bytes stay buffered in c, so reading c afterwards (or handing
// it to Pipe) replays them.
//
// Deadlines are the caller's job: set c's read deadline before calling. Errors: ErrNotTLS (as
// soon as the first bytes show it, without waiting for more), ErrHelloTooLarge,
// ErrMalformedHello (wrapped), or the read error (timeout, io.EOF, ...) wrapped.
//
// The returned ServerName may alias c's buffer: copy it (e.g. string(info.ServerName)) before
// reading from c again.
func SniffClientHello(c *PeekConn, maxBytes int) (ClientHelloInfo, error) {
	return sniffClientHello(c, maxBytes, &recordScanner{msgLen: -1})
}

// sniffClientHello is SniffClientHello with the record scanner supplied, so tests can see
// how much scanning it did.
//
// The work is linear in the hello's size however it is fragmented: the scanner resumes where
// the previous read left off (a hello of 1-byte records trickled one record per read must
// not be re-walked from the start each time), the hello is parsed once, when complete, and
// the buffer grows geometrically.
func sniffClientHello(c *PeekConn, maxBytes int, s *recordScanner) (ClientHelloInfo, error) {
	for {
		buf := c.Buffered()
		_, _, end, need, err := s.scan(buf)
		if end > maxBytes {
			// The whole hello may arrive in one read; the cap must not depend on timing.
			return ClientHelloInfo{}, ErrHelloTooLarge
		}
		if err == nil {
			info, _, _, err := parseClientHello(buf, nil)
			return info, err
		}
		if !errors.Is(err, ErrNeedMore) {
			return ClientHelloInfo{}, err
		}
		if need > maxBytes {
			return ClientHelloInfo{}, ErrHelloTooLarge
		}
		// Make room for everything the hello is known to need, but only wait for one more
		// read: each arrival is scanned so a non-TLS or malformed stream is rejected at once
		// instead of after need bytes that may never come. Nothing is reserved before the
		// first byte, so a silent client holds no buffer while Fill waits.
		if len(buf) > 0 {
			if c.buf != nil && need > len(*c.buf) {
				need = min(max(need, 2*len(*c.buf)), maxBytes)
			}
			c.reserve(need)
		}
		if err := c.Fill(len(buf) + 1); err != nil {
			return ClientHelloInfo{}, fmt.Errorf("forwarding: reading ClientHello: %w", err)
		}
	}
}
