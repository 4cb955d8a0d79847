package smartproxy

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
)

// CertificateStatusSource is implemented by a CertificateStore that can
// list the certificates it serves, so that Proxy.CertificateStatus, the
// metrics (smartproxy_certificate_expiry_timestamp_seconds) and the
// admin API report them. CertStore implements it.
type CertificateStatusSource interface {
	CertificateStatus() []acme.CertStatus
}

// CertificateStatus reports every certificate the proxy serves by name:
// the routes' own certificates and those of an Options.Certificates store
// that implements CertificateStatusSource (Source static, one entry per
// DNS name of the leaf, State valid or expired) and, with Options.ACME,
// the managed names as the manager reports them (acme or custom, with
// their order state, last error and next attempt). Sorted by name, static
// first for a name that has both.
func (p *Proxy) CertificateStatus() []acme.CertStatus {
	set := p.set.Load()
	now := time.Now()
	var out []acme.CertStatus
	seen := make(map[*tls.Certificate]bool)
	for _, r := range set.routes {
		rt := r.state.tls
		if rt == nil || rt.cert == nil || seen[rt.cert] {
			continue
		}
		seen[rt.cert] = true
		out = append(out, staticStatus(rt.cert, now)...)
	}
	if src, ok := p.certs.(CertificateStatusSource); ok && src != nil {
		out = append(out, src.CertificateStatus()...)
	}
	if m := p.opts.ACME; m != nil {
		out = append(out, m.Status()...)
	}
	slices.SortStableFunc(out, func(a, b acme.CertStatus) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(sourceRank(a.Source), sourceRank(b.Source)))
	})
	return out
}

// CertificateStatus lists the store's certificates (the default one
// included) as static, per DNS name of each, sorted by name.
func (s *CertStore) CertificateStatus() []acme.CertStatus {
	now := time.Now()
	s.mu.RLock()
	certs := make(map[*tls.Certificate]bool, len(s.exact)+len(s.wildcard)+1)
	for _, c := range s.exact {
		certs[c] = true
	}
	for _, c := range s.wildcard {
		certs[c] = true
	}
	if s.def != nil {
		certs[s.def] = true
	}
	s.mu.RUnlock()
	var out []acme.CertStatus
	for c := range certs {
		out = append(out, staticStatus(c, now)...)
	}
	slices.SortFunc(out, func(a, b acme.CertStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func sourceRank(s acme.Source) int {
	if s == acme.SourceStatic {
		return 0
	}
	return 1
}

// staticStatus describes a certificate the proxy was given, once per
// name. It does not fill in cert.Leaf: the certificate may be in use.
func staticStatus(cert *tls.Certificate, now time.Time) []acme.CertStatus {
	if len(cert.Certificate) == 0 {
		return nil
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil // not one crypto/tls could serve either
		}
	}
	st := acme.CertStatus{
		Source:    acme.SourceStatic,
		State:     acme.StateValid,
		Issuer:    cmp.Or(leaf.Issuer.CommonName, leaf.Issuer.String()),
		Serial:    leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}
	switch {
	case now.After(leaf.NotAfter):
		st.State = acme.StateExpired
	case now.Before(leaf.NotBefore):
		st.State = acme.StateError
		st.LastError = fmt.Sprintf("not valid before %s", leaf.NotBefore.Format(time.RFC3339))
	}
	names := leaf.DNSNames
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	out := make([]acme.CertStatus, 0, len(names))
	for _, n := range names {
		s := st
		s.Name = normalizeDomain(n)
		out = append(out, s)
	}
	return out
}
