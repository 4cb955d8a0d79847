package smartproxy

import (
	"slices"
	"strings"
	"time"
)

// CertificateStatus is the expiry of the certificate served for a name,
// as the metrics (smartproxy_certificate_expiry_timestamp_seconds) and
// the admin API report it.
type CertificateStatus struct {
	// Name is the DNS name (a wildcard as "*.example.com"), or "default"
	// for a store's default certificate.
	Name string
	// NotAfter is when the certificate stops being valid.
	NotAfter time.Time
}

// CertificateStatusSource is implemented by a CertificateStore that can
// list the certificates it serves; the proxy's metrics and admin API then
// report their expiry. CertStore implements it; an ACME manager that
// implements it is reported the same way, with no other wiring.
type CertificateStatusSource interface {
	CertificateStatus() []CertificateStatus
}

// CertificateStatus lists the store's certificates by name, sorted.
func (s *CertStore) CertificateStatus() []CertificateStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []CertificateStatus
	for name, c := range s.exact {
		out = append(out, CertificateStatus{Name: name, NotAfter: c.Leaf.NotAfter})
	}
	for name, c := range s.wildcard {
		out = append(out, CertificateStatus{Name: "*." + name, NotAfter: c.Leaf.NotAfter})
	}
	if s.def != nil && s.def.Leaf != nil {
		out = append(out, CertificateStatus{Name: "default", NotAfter: s.def.Leaf.NotAfter})
	}
	slices.SortFunc(out, func(a, b CertificateStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// certificateStatus asks the proxy's certificate store for its
// certificates and the ACME manager for its names, at most
// maxCertLabels of them; nil when neither can say.
func (p *Proxy) certificateStatus() []CertificateStatus {
	var st []CertificateStatus
	if src, ok := p.certs.(CertificateStatusSource); ok && src != nil {
		st = src.CertificateStatus()
	}
	// The ACME manager's names, when it is not already the store listed.
	if m := p.opts.ACME; m != nil {
		for _, s := range m.Status() {
			if !s.NotAfter.IsZero() {
				st = append(st, CertificateStatus{Name: s.Name, NotAfter: s.NotAfter})
			}
		}
	}
	return st[:min(len(st), maxCertLabels)]
}

// maxCertLabels bounds the certificate names one scrape reports.
const maxCertLabels = 1024
