package smartproxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// CertificateStore supplies certificates for TLS termination, chosen by
// the ClientHello's server name. Implementations must be safe for
// concurrent use and fast: GetCertificate runs in every full handshake.
// CertStore and *acme.Manager implement it;
// wrap a store to add your own source.
type CertificateStore interface {
	// GetCertificate returns the certificate for hello.ServerName, or an
	// error when there is none (the handshake then fails with an alert).
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// ErrNoCertificate is returned by CertStore when no certificate fits.
var ErrNoCertificate = errors.New("smartproxy: no certificate for server name")

// CertStore is the default CertificateStore: certificates indexed by the
// DNS names of their leaf, chosen by exact name, then by a wildcard
// certificate covering the name (one label, as RFC 6125 says), then the
// default. The zero value is empty and ready to use.
type CertStore struct {
	mu       sync.RWMutex
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // "*.example.com" filed under "example.com"
	def      *tls.Certificate
}

// NewCertStore returns an empty store.
func NewCertStore() *CertStore { return &CertStore{} }

// Add indexes cert under every DNS name of its leaf certificate. A later
// certificate for the same name replaces the earlier one (renewal). When
// cert.Leaf is nil the store keeps a copy with Leaf filled in rather than
// writing to a certificate the caller may already be serving.
func (s *CertStore) Add(cert *tls.Certificate) error {
	if cert != nil && cert.Leaf == nil && len(cert.Certificate) > 0 {
		c := *cert
		cert = &c
	}
	leaf, err := leafOf(cert)
	if err != nil {
		return err
	}
	names := leaf.DNSNames
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	// An empty name would be filed under "" and so served to clients
	// without SNI in place of the default.
	names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return normalizeDomain(n) == "" })
	if len(names) == 0 {
		return errors.New("smartproxy: certificate has no DNS names")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exact == nil {
		s.exact = make(map[string]*tls.Certificate)
		s.wildcard = make(map[string]*tls.Certificate)
	}
	for _, n := range names {
		n = normalizeDomain(n)
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			s.wildcard[rest] = cert
		} else {
			s.exact[n] = cert
		}
	}
	return nil
}

// SetDefault sets the certificate used when no name matches (and for
// clients that send no SNI).
func (s *CertStore) SetDefault(cert *tls.Certificate) {
	s.mu.Lock()
	s.def = cert
	s.mu.Unlock()
}

// GetCertificate implements CertificateStore.
func (s *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalizeDomain(hello.ServerName)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.exact[name]; c != nil {
		return c, nil
	}
	if dot := strings.IndexByte(name, '.'); dot > 0 {
		if c := s.wildcard[name[dot+1:]]; c != nil {
			return c, nil
		}
	}
	if s.def != nil {
		return s.def, nil
	}
	return nil, fmt.Errorf("%w %q", ErrNoCertificate, name)
}

func leafOf(cert *tls.Certificate) (*x509.Certificate, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("smartproxy: empty certificate")
	}
	if cert.Leaf != nil {
		return cert.Leaf, nil
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("smartproxy: parsing certificate: %w", err)
	}
	cert.Leaf = leaf
	return leaf, nil
}

// LoadCertificate loads the key pair a CertificateSpec names (inline PEM
// or files). It returns nil for "auto".
func LoadCertificate(spec *CertificateSpec) (*tls.Certificate, error) {
	if spec == nil || spec.Auto {
		return nil, nil
	}
	certPEM, keyPEM := []byte(spec.Cert), []byte(spec.Key)
	switch {
	case spec.CertFile != "" || spec.KeyFile != "":
		if spec.Cert != "" || spec.Key != "" {
			return nil, errors.New("give either cert/key or certFile/keyFile, not both")
		}
		if spec.CertFile == "" || spec.KeyFile == "" {
			return nil, errors.New("certFile and keyFile must be given together")
		}
		var err error
		if certPEM, err = readLimitedFile("certFile", spec.CertFile, maxPEMFileBytes); err != nil {
			return nil, err
		}
		if keyPEM, err = readLimitedFile("keyFile", spec.KeyFile, maxPEMFileBytes); err != nil {
			return nil, err
		}
	case spec.Cert == "" || spec.Key == "":
		return nil, errors.New("needs cert and key (PEM), certFile and keyFile, or \"auto\"")
	}
	if spec.CA != "" {
		if !strings.Contains(spec.CA, "-----BEGIN CERTIFICATE-----") {
			return nil, errors.New("ca: no PEM certificate found")
		}
		certPEM = append(append(certPEM, '\n'), spec.CA...)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if _, err := leafOf(&cert); err != nil {
		return nil, err
	}
	// X509KeyPair parses the leaf only; a broken chain certificate would
	// otherwise be sent to every client.
	for i, der := range cert.Certificate[1:] {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("chain certificate %d: %w", i+1, err)
		}
	}
	return &cert, nil
}
