package smartproxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// routeTLS is the compiled TLS setup of a terminating route.
type routeTLS struct {
	mode       TLSMode
	cert       *tls.Certificate // nil: the proxy's CertificateStore decides
	minVersion uint16
	maxVersion uint16
	ciphers    []uint16

	// Client side of terminate-and-reencrypt.
	backendName   ServerName // "", a ServerName mode or an explicit name
	backendRoots  *x509.CertPool
	backendNoAuth bool
	// backendSessions caches TLS sessions to backends, shared only with
	// routes (and reloads of routes) that trust the same roots.
	backendSessions tls.ClientSessionCache
	// backendH1 is the fast forward's backend config (h1client
	// Outgoing.TLS): backendConfig's without a server name, which
	// h1client sets per connection. One per compiled route, because its
	// identity is part of h1client's pool key: a reload that changes the
	// roots or verification never reuses a connection made under the
	// old ones (those idle out of the pool).
	backendH1 *tls.Config

	once   sync.Once
	server atomic.Pointer[tls.Config] // set once; read by ticket-key rotation
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
			if ver < tls.VersionTLS12 {
				v.fail(fmt.Sprintf("action.tls.versions[%d]", i), fmt.Errorf("TLS version %q is insecure and not supported (want TLSv1.2 or TLSv1.3)", name))
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
		var caPEM []byte
		rt.backendRoots, caPEM, err = loadCAPool(b.CA, b.CAFile)
		var fe *caFileError
		switch {
		case errors.As(err, &fe):
			// The message names caFile and its path already.
			v.fail("action.tls.backend", fe.err)
		case err != nil:
			v.fail("action.tls.backend.ca", err)
		}
		rt.backendSessions = backendSessionsFor(caPEM, b.InsecureSkipVerify)
	} else if t.Mode == TLSTerminateAndReencrypt {
		rt.backendSessions = backendSessionsFor(nil, false)
	}
	if t.Mode == TLSTerminateAndReencrypt {
		rt.backendH1 = rt.backendConfig("", "")
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

// loadCAPool builds a pool from inline PEM or a file, and returns the PEM
// it read; nil when neither is given (the system roots are used).
func loadCAPool(pemText, file string) (*x509.CertPool, []byte, error) {
	data := []byte(pemText)
	if file != "" {
		b, err := readLimitedFile("caFile", file, maxPEMFileBytes)
		if err != nil {
			return nil, nil, &caFileError{err}
		}
		// A newline keeps the file's first BEGIN line from running on
		// from an inline bundle that lacks its final newline.
		data = append(append(data, '\n'), b...)
	}
	if len(data) == 0 {
		return nil, nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, nil, errors.New("no PEM certificates found")
	}
	return pool, data, nil
}

// caFileError marks a failure to read caFile, as opposed to bad PEM.
type caFileError struct{ err error }

func (e *caFileError) Error() string { return e.err.Error() }
func (e *caFileError) Unwrap() error { return e.err }

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
		rt.server.Store(c)
	})
	return rt.server.Load()
}

// backendConfig is the client config for re-encryption to host, for a
// client that asked for sni.
func (rt *routeTLS) backendConfig(host, sni string) *tls.Config {
	return &tls.Config{
		ServerName:         rt.backendServerName(host, sni),
		RootCAs:            rt.backendRoots,
		InsecureSkipVerify: rt.backendNoAuth,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: rt.backendSessions,
	}
}

// backendServerName is the name a re-encrypted connection to host
// sends and verifies, for a client that sent sni.
func (rt *routeTLS) backendServerName(host, sni string) string {
	var name string
	switch rt.backendName {
	case "", ServerNameTarget:
		name = host
	case ServerNameOriginal:
		name = sni
	default:
		name = string(rt.backendName)
	}
	if name == "" {
		name = host // a client without SNI: verify the target itself
	}
	return name
}

// backendSessionCache lets re-encrypted connections resume their TLS
// sessions to backends, across connections, routes and reloads.
var backendSessionCache = tls.NewLRUClientSessionCache(1024)

// backendSessionsFor returns the view of backendSessionCache for routes
// that verify backends against caPEM (nil: the system roots), or skip
// verification. crypto/tls keys sessions by server name only, and a route
// that finds a session it does not trust (verified against other roots)
// deletes it: routes of different trust sharing keys would evict each
// other's sessions.
func backendSessionsFor(caPEM []byte, insecure bool) tls.ClientSessionCache {
	h := sha256.New()
	if insecure {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write(caPEM)
	return &prefixedSessionCache{prefix: hex.EncodeToString(h.Sum(nil)[:12]) + "|", cache: backendSessionCache}
}

// prefixedSessionCache is a namespace of a shared ClientSessionCache.
type prefixedSessionCache struct {
	prefix string
	cache  tls.ClientSessionCache
}

func (c *prefixedSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return c.cache.Get(c.prefix + key)
}

func (c *prefixedSessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.cache.Put(c.prefix+key, cs)
}
