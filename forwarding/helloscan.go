package forwarding

import "errors"

// HelloScanner parses a ClientHello from a stream it is shown as it grows, each time with every
// byte received so far (an event loop that has no net.Conn to hand SniffClientHello). Like
// SniffClientHello it scans each record once, however the hello is fragmented, so a client
// trickling one tiny record per segment costs linear, not quadratic, CPU. The zero value is
// ready; a HelloScanner serves one stream.
type HelloScanner struct {
	s     recordScanner
	ready bool
}

// Scan parses data, which must extend the data of earlier calls. It returns ErrNeedMore while
// the hello is incomplete and may still fit maxBytes, and otherwise what SniffClientHello
// returns: the hello, ErrNotTLS, ErrHelloTooLarge (as soon as the records show the hello
// cannot fit maxBytes) or ErrMalformedHello (wrapped). ServerName aliases data or a fresh
// buffer.
func (h *HelloScanner) Scan(data []byte, maxBytes int) (ClientHelloInfo, error) {
	if !h.ready {
		h.s, h.ready = recordScanner{msgLen: -1}, true
	}
	_, _, end, need, err := h.s.scan(data)
	switch {
	case end > maxBytes:
		return ClientHelloInfo{}, ErrHelloTooLarge
	case err == nil:
		info, _, _, err := parseClientHello(data, nil)
		return info, err
	case errors.Is(err, ErrNeedMore) && (need > maxBytes || len(data) >= maxBytes):
		return ClientHelloInfo{}, ErrHelloTooLarge
	}
	return ClientHelloInfo{}, err
}
