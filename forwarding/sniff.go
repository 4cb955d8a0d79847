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
	for {
		info, end, need, err := parseClientHello(c.Buffered(), nil)
		if end > maxBytes {
			// The whole hello may arrive in one read; the cap must not depend on timing.
			return ClientHelloInfo{}, ErrHelloTooLarge
		}
		if !errors.Is(err, ErrNeedMore) {
			return info, err
		}
		if need > maxBytes {
			return ClientHelloInfo{}, ErrHelloTooLarge
		}
		// Make room for everything the hello is known to need, but only wait for one more
		// read: each arrival is re-parsed so a non-TLS or malformed stream is rejected at
		// once instead of after need bytes that may never come.
		c.reserve(need)
		if err := c.Fill(len(c.Buffered()) + 1); err != nil {
			return ClientHelloInfo{}, fmt.Errorf("forwarding: reading ClientHello: %w", err)
		}
	}
}
