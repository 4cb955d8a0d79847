package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWKS cache policy. The bounds keep a misconfigured identity provider
// from making the proxy fetch on every request (max-age=0) or trust a
// rotated-out key for ever (a huge max-age).
const (
	jwksDefaultTTL     = 5 * time.Minute
	jwksMinTTL         = time.Minute
	jwksMaxTTL         = 24 * time.Hour
	jwksUnknownKidWait = 30 * time.Second // refetch for an unknown kid at most this often
	jwksRetryWait      = 5 * time.Second  // after a failed fetch
	jwksFetchTimeout   = 10 * time.Second
	jwksMaxBody        = 1 << 20
)

// jwksCache fetches and caches a JSON Web Key Set. Fetches happen in the
// goroutine of the request that needs them (no background goroutine to
// stop); concurrent requests share one fetch. Times come from the caller
// so tests control the clock.
type jwksCache struct {
	url    string
	client *http.Client

	fetches atomic.Int64 // completed fetch attempts, for tests and metrics

	mu          sync.Mutex
	keys        []jwkKey // nil until the first successful fetch
	expires     time.Time
	lastAttempt time.Time
	lastFailed  bool
	inflight    chan struct{} // closed when the running fetch ends
}

// jwkKey is one usable verification key of the set.
type jwkKey struct {
	kid string
	alg string // "" when the JWK does not restrict it
	key crypto.PublicKey
}

func newJWKSCache(url string) *jwksCache {
	// Keep-alives off: a fetch every few minutes gains nothing from an idle
	// connection, and idle connections would leave goroutines behind.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	return &jwksCache{url: url, client: &http.Client{Transport: tr, Timeout: jwksFetchTimeout}}
}

// keyFor returns the key(s) that may verify a token with kid and alg: one
// key when kid is set, a jwt.VerificationKeySet of the fitting keys
// otherwise.
func (c *jwksCache) keyFor(ctx context.Context, kid, alg string, now time.Time) (any, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if c.inflight != nil {
			ch := c.inflight
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("jwks: waiting for fetch: %w", ctx.Err())
			}
		}
		k := c.lookup(kid, alg)
		if attempt > 0 || !c.shouldFetch(k != nil, now) {
			c.mu.Unlock()
			if k == nil {
				return nil, fmt.Errorf("jwks: no key for kid %q and alg %s", kid, alg)
			}
			return k, nil
		}
		ch := make(chan struct{})
		c.inflight = ch
		c.mu.Unlock()
		c.fetch(ctx, now)
		close(ch)
	}
}

// shouldFetch decides, under mu, whether to fetch now; found says whether
// a cached key fits the token.
func (c *jwksCache) shouldFetch(found bool, now time.Time) bool {
	since := now.Sub(c.lastAttempt)
	switch {
	case c.lastFailed && since < jwksRetryWait:
		return false
	case c.keys == nil || !now.Before(c.expires):
		return true
	case !found:
		return since >= jwksUnknownKidWait
	}
	return false
}

// lookup finds the key for kid (the set of fitting keys when kid is ""),
// or nil. Caller holds mu.
func (c *jwksCache) lookup(kid, alg string) any {
	var set []jwt.VerificationKey
	for _, k := range c.keys {
		if (k.alg != "" && k.alg != alg) || !keyFitsAlg(k.key, alg) {
			continue
		}
		if kid != "" {
			if k.kid == kid {
				return k.key
			}
			continue
		}
		set = append(set, k.key)
	}
	if len(set) == 0 {
		return nil
	}
	return jwt.VerificationKeySet{Keys: set}
}

// fetch downloads the set and installs it; on failure the old keys stay
// in use (a flaky identity provider must not lock everybody out).
func (c *jwksCache) fetch(ctx context.Context, now time.Time) {
	keys, ttl, err := c.download(ctx)
	c.fetches.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight = nil
	c.lastAttempt = now
	c.lastFailed = err != nil
	if err != nil {
		return
	}
	c.keys = keys
	c.expires = now.Add(ttl)
}

func (c *jwksCache) download(ctx context.Context) ([]jwkKey, time.Duration, error) {
	// Not the request's cancellation: other requests wait for this fetch.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: fetching %s: %w", c.url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("jwks: fetching %s: status %s", c.url, resp.Status)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, jwksMaxBody)).Decode(&doc); err != nil {
		return nil, 0, fmt.Errorf("jwks: decoding %s: %w", c.url, err)
	}
	keys := make([]jwkKey, 0, len(doc.Keys))
	for _, raw := range doc.Keys {
		// Keys of unknown types or for encryption are skipped, not fatal:
		// a set may hold keys meant for other consumers.
		if k, err := parseJWK(raw); err == nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, 0, fmt.Errorf("jwks: %s has no usable signature key", c.url)
	}
	return keys, cacheTTL(resp.Header.Get("Cache-Control")), nil
}

// cacheTTL reads max-age from Cache-Control, clamped to the bounds.
func cacheTTL(cc string) time.Duration {
	ttl := jwksDefaultTTL
	for d := range strings.SplitSeq(cc, ",") {
		d = strings.TrimSpace(strings.ToLower(d))
		switch {
		case d == "no-cache" || d == "no-store":
			return jwksMinTTL
		case strings.HasPrefix(d, "max-age="):
			if n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64); err == nil && n >= 0 {
				ttl = time.Duration(min(n, int64(jwksMaxTTL/time.Second))) * time.Second
			}
		}
	}
	return min(max(ttl, jwksMinTTL), jwksMaxTTL)
}

// jwk is the subset of RFC 7517/7518/8037 fields needed for verification.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func parseJWK(raw json.RawMessage) (jwkKey, error) {
	var j jwk
	if err := json.Unmarshal(raw, &j); err != nil {
		return jwkKey{}, err
	}
	if j.Use != "" && j.Use != "sig" {
		return jwkKey{}, fmt.Errorf("key %q is for %q", j.Kid, j.Use)
	}
	k := jwkKey{kid: j.Kid, alg: j.Alg}
	b64 := base64.RawURLEncoding.DecodeString
	switch j.Kty {
	case "RSA":
		n, err1 := b64(j.N)
		e, err2 := b64(j.E)
		if err := errors.Join(err1, err2); err != nil || len(e) == 0 || len(e) > 4 {
			return jwkKey{}, fmt.Errorf("key %q: bad RSA parameters", j.Kid)
		}
		k.key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return jwkKey{}, fmt.Errorf("key %q: unsupported curve %q", j.Kid, j.Crv)
		}
		x, err1 := b64(j.X)
		y, err2 := b64(j.Y)
		size := (curve.Params().BitSize + 7) / 8
		if errors.Join(err1, err2) != nil || len(x) != size || len(y) != size {
			return jwkKey{}, fmt.Errorf("key %q: bad EC coordinates", j.Kid)
		}
		// ParseUncompressedPublicKey checks that the point is on the curve.
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return jwkKey{}, fmt.Errorf("key %q: %w", j.Kid, err)
		}
		k.key = pub
	case "OKP":
		x, err := b64(j.X)
		if j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return jwkKey{}, fmt.Errorf("key %q: unsupported OKP key", j.Kid)
		}
		k.key = ed25519.PublicKey(x)
	default:
		return jwkKey{}, fmt.Errorf("key %q: unsupported kty %q", j.Kid, j.Kty)
	}
	return k, nil
}
