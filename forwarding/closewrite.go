package forwarding

import (
	"errors"
	"fmt"
	"net"
)

// CloseWrite half-closes c: it shuts down c's writing side, so that the
// peer reads EOF while c can still read. It uses c's own CloseWrite or,
// for a wrapper without one, that of the conn its Unwrap returns
// (wrappers whose data path splice bypasses anyway, such as a leased
// backend conn, must not lose half-close). When no conn in the chain can
// half-close, the error wraps errors.ErrUnsupported, so that callers can
// tell "cannot" (close both ways instead) from a failed half-close.
//
// Every CloseWrite method of this module's conn wrappers is this
// function applied to the conn beneath.
func CloseWrite(c net.Conn) error {
	first := c
	for range maxUnwrap {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	return fmt.Errorf("forwarding: %T cannot half-close: %w", first, errors.ErrUnsupported)
}
