package smartproxy

import (
	"crypto/tls"
	"slices"
	"sync"
	"sync/atomic"
)

// alpnHTTP are the protocols a terminating forward route offers to a
// client that asks for one of them.
var alpnHTTP = []string{"h2", "http/1.1"}

// alpnConfigs chooses, per ClientHello, the server config of a terminating
// forward route: a client that offers h2 or http/1.1 is offered both (so
// h2-only clients such as gRPC get h2 even when the route was written
// without any HTTP field, as TS configs are), a client that offers only
// other protocols (postgres asks for "postgresql") or none is offered
// nothing, so its handshake still succeeds: Go refuses a handshake whose
// ALPN lists share nothing. One per route and route generation, built on
// first use.
type alpnConfigs struct {
	once     sync.Once
	selector *tls.Config                // only GetConfigForClient: what tls.Server is given
	http     atomic.Pointer[tls.Config] // the route's config plus NextProtos; read by ticket rotation
}

// config returns the config to hand tls.Server for a route whose own
// config is plain (see routeTLS.serverConfig).
func (a *alpnConfigs) config(plain *tls.Config) *tls.Config {
	a.once.Do(func() {
		h := plain.Clone()
		h.NextProtos = slices.Clone(alpnHTTP)
		a.http.Store(h)
		a.selector = &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			if offersHTTP(chi.SupportedProtos) {
				return h, nil
			}
			return plain, nil
		}}
	})
	return a.selector
}

// setTicketKeys installs rotated session-ticket keys on the HTTP variant
// (the plain one is the route's own config, rotated with it).
func (a *alpnConfigs) setTicketKeys(keys [][32]byte) {
	if c := a.http.Load(); c != nil {
		c.SetSessionTicketKeys(keys)
	}
}

// offersHTTP reports whether a client's ALPN list names an HTTP version
// the HTTP layer serves.
func offersHTTP(protos []string) bool {
	for _, p := range protos {
		if p == "h2" || p == "http/1.1" {
			return true
		}
	}
	return false
}
