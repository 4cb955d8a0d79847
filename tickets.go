package smartproxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"sync"
	"time"
)

// Session ticket keys: every terminating route's tls.Config shares the
// proxy's keys, so a ticket issued on one route resumes on another and
// survives UpdateRoutes. Explicit keys turn off crypto/tls's own rotation,
// so the proxy rotates them itself: a new key every ticketKeyRotation,
// keeping the previous ones for ticketKeysKept-1 periods so tickets
// already issued still resume, while old keys do not live forever
// (forward secrecy of resumed sessions).
const (
	ticketKeyRotation = 24 * time.Hour
	ticketKeysKept    = 3
)

type ticketKeyRing struct {
	mu   sync.Mutex
	keys [][32]byte
}

// newTLSBase is the template every terminating route's tls.Config is
// cloned from (Clone copies the ticket keys).
func newTLSBase(ring *ticketKeyRing) (*tls.Config, error) {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	keys, err := ring.rotate()
	if err != nil {
		return nil, err
	}
	base.SetSessionTicketKeys(keys)
	return base, nil
}

// rotate adds a fresh key in front (the one that encrypts new tickets)
// and drops the oldest beyond ticketKeysKept.
func (r *ticketKeyRing) rotate() ([][32]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("session ticket key: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append([][32]byte{k}, r.keys...)
	if len(r.keys) > ticketKeysKept {
		r.keys = r.keys[:ticketKeysKept]
	}
	return append([][32]byte(nil), r.keys...), nil
}

// rotateTicketKeys installs a new key on the base config and on every
// route config already built. Configs built later clone the base.
func (p *Proxy) rotateTicketKeys() error {
	keys, err := p.tickets.rotate()
	if err != nil {
		return err
	}
	p.tlsBase.SetSessionTicketKeys(keys)
	for _, r := range p.set.Load().routes {
		if rt := r.state.tls; rt != nil {
			if c := rt.server.Load(); c != nil {
				c.SetSessionTicketKeys(keys)
			}
		}
		if h := r.state.http; h != nil {
			if c := h.alpn.Load(); c != nil { // the ALPN variant of the same route
				c.SetSessionTicketKeys(keys)
			}
		}
	}
	return nil
}

// runTicketRotation rotates the keys until ctx ends.
func (p *Proxy) runTicketRotation(ctx context.Context) {
	t := time.NewTicker(ticketKeyRotation)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.rotateTicketKeys(); err != nil {
				p.log.Error("rotating TLS session ticket keys", "err", err)
			}
		}
	}
}
