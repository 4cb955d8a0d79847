package acme

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/acme"
)

// challengePrefix is the path under which HTTP-01 tokens are served.
const challengePrefix = "/.well-known/acme-challenge/"

// challenges holds the answers for validations in progress. They live in
// memory only: the process that orders a name answers its validation
// (several proxies behind one address need the CA to reach the one that
// orders, or TLS-ALPN-01 on a sticky path).
type challenges struct {
	mu   sync.RWMutex
	http map[string]string           // host + "/" + token → key authorization
	alpn map[string]*tls.Certificate // host → RFC 8737 certificate
}

// prepare makes chal answerable for name and returns its cleanup.
func (c *challenges) prepare(client *acme.Client, chal *acme.Challenge, name string) (func(), error) {
	switch chal.Type {
	case "http-01":
		if !validToken(chal.Token) {
			return nil, fmt.Errorf("acme: CA sent a malformed HTTP-01 token for %s", name)
		}
		ka, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return nil, err
		}
		k := name + "/" + chal.Token
		c.mu.Lock()
		if c.http == nil {
			c.http = map[string]string{}
		}
		c.http[k] = ka
		c.mu.Unlock()
		return func() {
			c.mu.Lock()
			delete(c.http, k)
			c.mu.Unlock()
		}, nil
	case "tls-alpn-01":
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.alpn == nil {
			c.alpn = map[string]*tls.Certificate{}
		}
		c.alpn[name] = &cert
		c.mu.Unlock()
		return func() {
			c.mu.Lock()
			if c.alpn[name] == &cert {
				delete(c.alpn, name)
			}
			c.mu.Unlock()
		}, nil
	}
	return nil, fmt.Errorf("acme: challenge type %q not supported", chal.Type)
}

func (c *challenges) alpnCert(name string) *tls.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.alpn[name]
}

// validToken accepts what RFC 8555 allows in a token (base64url, at
// least 128 bits) and bounds its length.
func validToken(tok string) bool {
	if len(tok) < 22 || len(tok) > 256 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		b := tok[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// HTTPChallenge returns the key authorization for an HTTP-01 token of a
// name being validated. host may carry a port and is matched
// case-insensitively.
func (m *Manager) HTTPChallenge(host, token string) (keyAuth string, ok bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !validToken(token) {
		return "", false
	}
	m.chal.mu.RLock()
	defer m.chal.mu.RUnlock()
	ka, ok := m.chal.http[host+"/"+token]
	return ka, ok
}

// HTTPHandler answers GET (and HEAD) /.well-known/acme-challenge/{token}
// for tokens of names being validated and passes every other request to
// next (nil next: 404). Put it in front of the routes of the HTTP-01
// port, so the challenge wins and user routes keep working.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, found := strings.CutPrefix(r.URL.Path, challengePrefix); found && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			if ka, ok := m.HTTPChallenge(r.Host, tok); ok {
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("Cache-Control", "no-store")
				_, _ = w.Write([]byte(ka))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
