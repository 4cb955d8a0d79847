package smartproxy

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// errNoCertificateSource says why a terminating route that takes its
// certificate from Options.Certificates is refused when there is none.
var errNoCertificateSource = errors.New(`certificate "auto" (or none) takes the certificate from Options.Certificates ` +
	"or Options.ACME, but neither is set: give the route a certificate, or set one of them")

// checkCertificateSources refuses terminating routes that would fail every
// handshake: their certificate comes from Options.Certificates or
// Options.ACME and the proxy has neither (a config file always has ACME
// for such routes: Config.Options). A store that is set but lacks a
// name is not refused, since stores can be filled at run time; the
// handshake that misses one is logged (noCertWarner).
func checkCertificateSources(routes []*Route, haveStore bool) error {
	if haveStore {
		return nil
	}
	var errs []error
	for i, r := range routes {
		if rt := r.state.tls; rt != nil && rt.cert == nil {
			errs = append(errs, &RouteError{Route: routeLabel(r, i), Field: "action.tls.certificate", Err: errNoCertificateSource})
		}
	}
	return errors.Join(errs...)
}

// noCertWarnEvery bounds how often a missing certificate is logged at
// WARN: a client retrying in a loop must not flood the log.
const noCertWarnEvery = 10 * time.Second

// noCertWarner logs handshakes that failed for want of a certificate at
// WARN, at most once per noCertWarnEvery, counting those it held back.
type noCertWarner struct {
	mu         sync.Mutex
	last       time.Time
	suppressed atomic.Int64
}

// warn logs (or counts) one handshake that found no certificate for sni.
func (p *Proxy) warnNoCertificate(route, sni string, err error) {
	w := &p.noCert
	w.mu.Lock()
	now := time.Now()
	if now.Sub(w.last) < noCertWarnEvery {
		w.mu.Unlock()
		w.suppressed.Add(1)
		return
	}
	w.last = now
	w.mu.Unlock()
	p.log.Warn("TLS handshake failed: no certificate for the requested name",
		"route", route, "sni", sni, "err", err, "alsoSinceLastWarning", w.suppressed.Swap(0),
		"fix", fmt.Sprintf("add a certificate for %q to Options.Certificates or to the route", sni))
}
