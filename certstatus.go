package smartproxy

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
)

// CertificateStatus reports every certificate the proxy serves by name:
// the routes' own certificates (Source static, one entry per DNS name of
// the leaf, State valid or expired) and, with Options.ACME, the managed
// names as the manager reports them (acme or custom, with their order
// state, last error and next attempt). Sorted by name, static first for
// a name that has both. Certificates a user's Options.Certificates store
// holds are not listed: the proxy cannot enumerate a store.
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
	if m := p.opts.ACME; m != nil {
		out = append(out, m.Status()...)
	}
	slices.SortStableFunc(out, func(a, b acme.CertStatus) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(sourceRank(a.Source), sourceRank(b.Source)))
	})
	return out
}

func sourceRank(s acme.Source) int {
	if s == acme.SourceStatic {
		return 0
	}
	return 1
}

// staticStatus describes a route's own certificate, once per name.
func staticStatus(cert *tls.Certificate, now time.Time) []acme.CertStatus {
	leaf, err := leafOf(cert)
	if err != nil {
		return nil // LoadCertificate parsed it: cannot happen
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
