package smartproxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// routeTLS is the compiled TLS setup of a terminating route.
type routeTLS struct {
	mode       TLSMode
	cert       *tls.Certificate // nil: the proxy's CertificateStore decides
	minVersion uint16
	maxVersion uint16
	ciphers    []uint16

	// Client side of terminate-and-reencrypt.
	backendName   string // "", "target", "original" or an explicit name
	backendRoots  *x509.CertPool
	backendNoAuth bool

	once   sync.Once
	server *tls.Config
}

// compileTLS validates a terminating route's TLS block.
func (v *routeValidator) compileTLS(t *RouteTLS) *routeTLS {
	rt := &routeTLS{mode: t.Mode, minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS13}
	cert, err := LoadCertificate(t.Certificate)
	if err != nil {
		v.fail("action.tls.certificate", err)
	}
	rt.cert = cert
	if len(t.Versions) > 0 {
		rt.minVersion, rt.maxVersion = 0xffff, 0
		for i, name := range t.Versions {
			ver, ok := tlsVersionNames[name]
			if !ok {
				v.fail(fmt.Sprintf("action.tls.versions[%d]", i), fmt.Errorf("unknown TLS version %q (want TLSv1.2 or TLSv1.3)", name))
				continue
			}
			rt.minVersion, rt.maxVersion = min(rt.minVersion, ver), max(rt.maxVersion, ver)
		}
	}
	if t.Ciphers != "" {
		rt.ciphers, err = parseCipherSuites(t.Ciphers)
		if err != nil {
			v.fail("action.tls.ciphers", err)
		}
	}
	if b := t.Backend; b != nil {
		if t.Mode != TLSTerminateAndReencrypt {
			v.fail("action.tls.backend", errors.New("only applies to mode \"terminate-and-reencrypt\""))
		}
		rt.backendName, rt.backendNoAuth = b.ServerName, b.InsecureSkipVerify
		rt.backendRoots, err = loadCAPool(b.CA, b.CAFile)
		if err != nil {
			v.fail("action.tls.backend.ca", err)
		}
	}
	return rt
}

// parseCipherSuites maps IANA/Go suite names ("TLS_ECDHE_ECDSA_WITH_
// AES_128_GCM_SHA256") to ids; insecure suites are refused.
func parseCipherSuites(list string) ([]uint16, error) {
	byName := make(map[string]uint16)
	for _, cs := range tls.CipherSuites() {
		byName[cs.Name] = cs.ID
	}
	insecure := make(map[string]bool)
	for _, cs := range tls.InsecureCipherSuites() {
		insecure[cs.Name] = true
	}
	var ids []uint16
	for _, name := range strings.FieldsFunc(list, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		id, ok := byName[name]
		switch {
		case insecure[name]:
			return nil, fmt.Errorf("cipher suite %q is insecure", name)
		case !ok:
			return nil, fmt.Errorf("unknown cipher suite %q", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// loadCAPool builds a pool from inline PEM or a file; nil when neither is
// given (the system roots are used).
func loadCAPool(pemText, file string) (*x509.CertPool, error) {
	data := []byte(pemText)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		data = append(data, b...)
	}
	if len(data) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no PEM certificates found")
	}
	return pool, nil
}

// serverConfig returns the route's tls.Config, built once from the
// proxy's base config so session tickets work across routes and reloads.
func (rt *routeTLS) serverConfig(base *tls.Config, store CertificateStore) *tls.Config {
	rt.once.Do(func() {
		c := base.Clone()
		c.MinVersion, c.MaxVersion = rt.minVersion, rt.maxVersion
		if len(rt.ciphers) > 0 {
			c.CipherSuites = slices.Clone(rt.ciphers)
		}
		if cert := rt.cert; cert != nil {
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }
		} else {
			c.GetCertificate = store.GetCertificate
		}
		rt.server = c
	})
	return rt.server
}

// backendConfig is the client config for re-encryption to host, for a
// client that asked for sni.
func (rt *routeTLS) backendConfig(host, sni string) *tls.Config {
	name := rt.backendName
	switch name {
	case "", "target":
		name = host
	case "original":
		name = sni
	}
	if name == "" {
		name = host // a client without SNI: verify the target itself
	}
	return &tls.Config{
		ServerName:         name,
		RootCAs:            rt.backendRoots,
		InsecureSkipVerify: rt.backendNoAuth,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: backendSessionCache,
	}
}

// backendSessionCache lets re-encrypted connections resume their TLS
// sessions to backends.
var backendSessionCache = tls.NewLRUClientSessionCache(1024)
