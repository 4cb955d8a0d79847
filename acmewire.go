package smartproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// How the proxy drives an ACME manager (Options.ACME): which names it
// manages, which ports answer HTTP-01, and where challenges are answered
// before routing. The manager does the ordering; this file only wires it.

// acmeChallengePrefix is the path of HTTP-01 challenge requests (RFC 8555
// 8.3).
const acmeChallengePrefix = "/.well-known/acme-challenge/"

// acmeALPNProto is the ALPN protocol of TLS-ALPN-01 (RFC 8737).
const acmeALPNProto = "acme-tls/1"

// acmeALPNOnly is the ALPN extension of a TLS-ALPN-01 validation, which
// offers acme-tls/1 alone (RFC 8737 3): a ProtocolNameList of one name.
var acmeALPNOnly = append([]byte{0, byte(1 + len(acmeALPNProto)), byte(len(acmeALPNProto))}, acmeALPNProto...)

// acmeManageTimeout bounds Manage when the caller gives no context
// (UpdateRoutes): it loads stored certificates, which is local work.
const acmeManageTimeout = 30 * time.Second

// acmeStopTimeout bounds the manager's Stop.
const acmeStopTimeout = 10 * time.Second

// setUpACME builds the manager a config file described (Options.acmeFile)
// when ACME is not set, and makes the manager the certificate store when
// the user gave none. Called by New after withDefaults; userCerts says
// whether the user set Certificates.
func (o *Options) setUpACME(userCerts bool) error {
	if o.ACME == nil && o.acmeFile != nil {
		log := o.Logger
		if o.acmeFile.implicit {
			log.Warn(`routes with certificate "auto" and no acme block: ordering certificates from Let's Encrypt staging, which browsers do not trust; add acme: {email, useProduction: true} for trusted ones`,
				"certificateStore", o.acmeFile.dir)
		}
		m, err := o.acmeFile.newManager(log)
		if err != nil {
			return fmt.Errorf("acme: %w", err)
		}
		o.ACME = m
	}
	if o.ACME != nil && !userCerts {
		o.Certificates = o.ACME
		o.acmeOnly = true
	}
	return nil
}

// managedDomains returns the names the ACME manager must hold a
// certificate for: the domains of terminating routes without a
// certificate of their own, each with its route's settings. It refuses
// what the manager cannot order when it is the only store.
func managedDomains(routes []*Route, opts Options) ([]acme.Domain, map[string]bool, error) {
	if opts.ACME == nil {
		for _, r := range routes {
			if t := r.Action.TLS; t != nil && t.ACME != nil {
				return nil, nil, &RouteError{Route: routeLabel(r, r.state.index), Field: "action.tls.acme", Err: errors.New("needs an ACME manager (Options.ACME, or an acme block in the config file)")}
			}
		}
		return nil, nil, nil
	}
	type owner struct {
		route string
		over  *RouteACME
	}
	owners := make(map[string]owner)
	var domains []acme.Domain
	var errs []error
	for _, r := range routes {
		rt := r.state.tls
		if rt == nil || rt.cert != nil {
			continue
		}
		label := routeLabel(r, r.state.index)
		over := r.Action.TLS.ACME
		var settings *acme.Settings
		if over != nil {
			s := over.mergeOver(opts.ACME.Settings())
			settings = &s
		}
		if len(r.state.domains) == 0 && opts.acmeOnly {
			errs = append(errs, &RouteError{Route: label, Field: "match.domains", Err: errors.New(`certificate "auto" with ACME needs the names to order: list them in match.domains, or give the route a certificate`)})
		}
		for i, d := range r.state.domains {
			if err := orderableName(d); err != nil {
				if opts.acmeOnly {
					errs = append(errs, &RouteError{Route: label, Field: fmt.Sprintf("match.domains[%d]", i), Err: err})
				}
				continue // a store wrapping the manager serves these itself
			}
			if prev, dup := owners[d.text]; dup {
				if !prev.over.equal(over) {
					errs = append(errs, &RouteError{Route: label, Field: "action.tls.acme", Err: fmt.Errorf("domain %q is also managed by route %s with other ACME settings", d.text, prev.route)})
				}
				continue
			}
			owners[d.text] = owner{route: label, over: over}
			domains = append(domains, acme.Domain{Name: d.text, Settings: settings})
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	names := make(map[string]bool, len(domains))
	for _, d := range domains {
		names[d.Name] = true
	}
	return domains, names, nil
}

// orderableName refuses what the manager would refuse in Manage (which
// -check does not run; acme.CheckName), and says so plainly for a
// pattern, which match.domains allows.
func orderableName(d domainPattern) error {
	const fix = "; list exact names, or give the route a certificate"
	if d.glob != nil {
		return fmt.Errorf("%q is a pattern: ACME (HTTP-01, TLS-ALPN-01) orders certificates for exact names only (a wildcard certificate needs DNS-01, which this proxy does not do)%s", d.text, fix)
	}
	if err := acme.CheckName(d.text); err != nil {
		return fmt.Errorf("%w%s", err, fix)
	}
	return nil
}

// mergeOver returns base with the route's settings that are set.
func (a *RouteACME) mergeOver(base acme.Settings) acme.Settings {
	if a.Email != "" {
		base.Email = a.Email
	}
	if a.UseProduction != nil {
		base.UseProduction = *a.UseProduction
	}
	if a.ChallengePort != 0 {
		base.HTTPPort = a.ChallengePort
	}
	if a.RenewBeforeDays != 0 {
		base.RenewBefore = time.Duration(a.RenewBeforeDays) * 24 * time.Hour
	}
	if a.DirectoryURL != "" {
		base.DirectoryURL = a.DirectoryURL
	}
	return base
}

// equal reports whether two routes ask for the same settings.
func (a *RouteACME) equal(b *RouteACME) bool {
	if a == nil || b == nil {
		return a == b
	}
	pa, pb := a.UseProduction, b.UseProduction
	if (pa == nil) != (pb == nil) || pa != nil && *pa != *pb {
		return false
	}
	return a.Email == b.Email && a.ChallengePort == b.ChallengePort && a.RenewBeforeDays == b.RenewBeforeDays && a.DirectoryURL == b.DirectoryURL
}

// manageACME hands set's names to the manager and returns set with the
// manager's HTTP-01 ports added to its port plans (a copy: set may be
// published already). Without a manager it returns set.
func (p *Proxy) manageACME(ctx context.Context, set *routeSet) (*routeSet, error) {
	m := p.opts.ACME
	if m == nil {
		return set, nil
	}
	if err := m.Manage(ctx, set.acmeDomains); err != nil {
		return nil, fmt.Errorf("smartproxy: acme: %w", err)
	}
	out := *set
	out.ports = maps.Clone(set.ports)
	for _, port := range m.HTTPPorts() {
		plan := out.ports[port]
		plan.acmeHTTP = true
		out.ports[port] = plan
		out.acmeHTTP = true
	}
	out.acmeALPN = m.TLSALPNEnabled()
	return &out, nil
}

// isACMEChallengeLine reads the rest of an HTTP request line that peek
// holds the start of, under the initial-data deadline, and reports
// whether its target is an HTTP-01 challenge path (origin or absolute
// form). A line that does not end within sniffLineCap bytes is not one.
func isACMEChallengeLine(peek *forwarding.PeekConn, deadline time.Time) bool {
	_ = peek.SetReadDeadline(deadline)
	defer func() { _ = peek.SetReadDeadline(time.Time{}) }()
	for {
		b := peek.Buffered()
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			_, target, ok := strings.Cut(string(b[:i]), " ")
			if !ok {
				return false
			}
			target, _, _ = strings.Cut(target, " ")
			if rest, ok := strings.CutPrefix(target, "http://"); ok {
				if slash := strings.IndexByte(rest, '/'); slash >= 0 {
					target = rest[slash:]
				}
			}
			return strings.HasPrefix(target, acmeChallengePrefix)
		}
		if len(b) >= sniffLineCap || peek.Fill(len(b)+1) != nil {
			return false
		}
	}
}

// answerACMEChallenge answers an HTTP-01 challenge request on a plain
// HTTP connection of an ACME port before any route sees it: the key
// authorization, or 404 for a token the manager does not know. It
// reports whether the request was answered. On a connection taken only
// for the challenge (a port whose routes do not speak HTTP), every other
// request is answered 404 and the connection closed.
func (h *httpLayer) answerACMEChallenge(w http.ResponseWriter, r *http.Request, hc *httpConn) bool {
	if hc.terminated {
		return false
	}
	if set := h.px.routes(); !hc.acmeOnly && (!set.acmeHTTP || !set.ports[hc.rc.Port].acmeHTTP) {
		return false
	}
	token, ok := strings.CutPrefix(r.URL.Path, acmeChallengePrefix)
	if !ok {
		if hc.acmeOnly {
			w.Header().Set("Connection", "close")
			http.Error(w, "404 not found", http.StatusNotFound)
			return true
		}
		return false
	}
	host := requestHost(r, "")
	keyAuth, found := "", false
	if r.Method == http.MethodGet || r.Method == http.MethodHead { // the manager checks the token
		keyAuth, found = h.px.acmeChallenge(host, token)
	}
	h.px.logConn("ACME HTTP-01 challenge", "id", hc.rc.ConnectionID, "client", hc.rc.ClientAddr, "port", hc.rc.Port, "host", host, "found", found)
	if !found {
		http.Error(w, "404 no such ACME challenge", http.StatusNotFound)
		return true
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(keyAuth))
	return true
}

// answerALPNChallenge completes a TLS-ALPN-01 validation handshake with
// the manager's challenge certificate; the connection is then closed by
// serve, never routed. It reports false when the hello is not one this
// proxy answers: ACME off, a name it does not manage, a port without a
// terminating route, or a hello that does not offer "acme-tls/1" alone.
func (p *Proxy) answerALPNChallenge(set *routeSet, peek *forwarding.PeekConn, rc *RouteContext, hello *forwarding.ClientHelloInfo, deadline time.Time) bool {
	if !set.acmeALPN || !set.ports[rc.Port].terminating || !set.acmeNames[rc.Domain] || !bytes.Equal(hello.ALPN, acmeALPNOnly) {
		return false
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{acmeALPNProto},
		GetCertificate: p.opts.ACME.GetCertificate,
	}
	tconn := tls.Server(peek, cfg)
	_ = peek.SetDeadline(deadline)
	err := tconn.HandshakeContext(p.baseCtx)
	p.logConn("ACME TLS-ALPN-01 challenge", "id", rc.ConnectionID, "client", rc.ClientAddr, "port", rc.Port, "domain", rc.Domain, "err", err)
	if err == nil {
		_ = tconn.Close() // close_notify; serve closes the socket
	}
	return true
}

// acmeChallengeOf is the seam's acmeChallenge for a manager m, which may
// be nil.
func acmeChallengeOf(m *acme.Manager) func(host, token string) (string, bool) {
	if m == nil {
		return func(string, string) (string, bool) { return "", false }
	}
	return m.HTTPChallenge
}
