package smartproxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Session ticket keys: every terminating route's tls.Config shares the
// proxy's keys, so a ticket issued on one route resumes on another and
// survives UpdateRoutes. Explicit keys turn off crypto/tls's own rotation,
// so the proxy rotates them itself: a new key every ticketKeyRotation,
// keeping the previous ones so tickets already issued still resume, while
// old keys do not live forever (forward secrecy of resumed sessions).
//
// crypto/tls tells TLS 1.3 clients that a ticket may be used for 7 days
// (maxSessionTicketLifetime: a constant, with no knob in tls.Config) and
// refuses older tickets itself, in TLS 1.2 too. The ring keeps keys long
// enough to honour that hint: a ticket sealed just before a rotation is
// still decryptable ticketKeysKept-1 rotations later, so ticketKeysKept-1
// periods must cover the 7 days. Keeping fewer (three, before) made
// clients offer tickets the proxy could no longer open: a full handshake
// where the client was promised a resumption. A key is thus at most 8
// days old; a shorter hint would need our own ticket format, or Go's.
const (
	ticketKeyRotation = 24 * time.Hour
	ticketLifetime    = 7 * 24 * time.Hour // what crypto/tls hints and enforces
	ticketKeysKept    = int(ticketLifetime/ticketKeyRotation) + 1
)

// defaultTLS12Suites are the TLS 1.2 cipher suites of terminating routes
// that set no ciphers: ECDHE with an AEAD only, as HAProxy's and
// Mozilla's "intermediate" defaults. Go's own default list still has the
// ECDHE CBC-SHA suites, whose MAC-then-encrypt construction is what
// LUCKY13-style timing attacks go after (testssl.sh warns about them);
// every TLS 1.2 client of the last decade has an AEAD suite. A route's
// "ciphers" option replaces this list, so it can widen it again. TLS 1.3
// suites are AEAD by design and not configurable in crypto/tls.
var defaultTLS12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

type ticketKeyRing struct {
	mu   sync.Mutex
	keys [][32]byte
}

// newTLSBase is the template every terminating route's tls.Config is
// cloned from (Clone copies the ticket keys).
func newTLSBase(ring *ticketKeyRing) (*tls.Config, error) {
	base := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: slices.Clone(defaultTLS12Suites)}
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
	set := p.set.Load()
	for _, r := range set.routes {
		if rt := r.state.tls; rt != nil {
			if c := rt.server.Load(); c != nil {
				c.SetSessionTicketKeys(keys)
			}
		}
		if a := set.alpn[r]; a != nil { // the ALPN variant of the same route
			a.setTicketKeys(keys)
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
