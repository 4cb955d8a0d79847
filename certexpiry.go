package smartproxy

import (
	"github.com/gosmartproxy/smartproxy/admin"
)

// certificateStatus is the expiry per name that the metrics
// (smartproxy_certificate_expiry_timestamp_seconds) and the admin API
// report, from CertificateStatus: one entry per name, the earliest
// expiry when several certificates carry it (so that an alert on it
// fires for the first to lapse, and no two series share a label), names
// without a certificate yet left out, at most maxCertLabels of them.
func (p *Proxy) certificateStatus() []admin.Certificate {
	var out []admin.Certificate
	for _, s := range p.CertificateStatus() { // sorted by name
		switch n := len(out); {
		case s.NotAfter.IsZero():
		case n > 0 && out[n-1].Name == s.Name:
			if s.NotAfter.Before(out[n-1].NotAfter) {
				out[n-1].NotAfter = s.NotAfter
			}
		case n == maxCertLabels:
			return out
		default:
			out = append(out, admin.Certificate{Name: s.Name, NotAfter: s.NotAfter})
		}
	}
	return out
}

// maxCertLabels bounds the certificate names one scrape reports.
const maxCertLabels = 1024
