package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/schema"
)

// jwksServer serves a mutable key set and counts requests.
type jwksServer struct {
	srv     *httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []map[string]string
	cc      string // Cache-Control
	status  int
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{status: http.StatusOK}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cc != "" {
			w.Header().Set("Cache-Control", s.cc)
		}
		w.WriteHeader(s.status)
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) set(cc string, keys ...map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cc, s.keys = cc, keys
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]string {
	b, err := k.Bytes() // uncompressed point: 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	size := (len(b) - 1) / 2
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(b[1 : 1+size]), "y": b64(b[1+size:])}
}

func edJWK(kid string, k ed25519.PublicKey) map[string]string {
	return map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k)}
}

func TestJWKSCachingAndRotation(t *testing.T) {
	s := newJWKSServer(t)
	s.set("public, max-age=600", rsaJWK("k1", &testRSAKey().PublicKey), ecJWK("e1", &testECKey().PublicKey),
		map[string]string{"kty": "oct", "kid": "ignored", "k": "AAAA"}) // unusable kinds are skipped
	cs := mustCompile(t, Config{JWTAuth: &JWTAuth{JWKSURL: s.srv.URL, Algorithm: schema.StringList{"RS256", "ES256"}}})
	c := cs.jwt.jwks
	now := testNow
	auth := func(m jwt.SigningMethod, key any, kid string, at time.Time) bool {
		_, ok := doAuth(cs, "/", at, withBearer(sign(t, m, key, claims(), kid)))
		return ok
	}

	require.True(t, auth(jwt.SigningMethodRS256, testRSAKey(), "k1", now))
	require.True(t, auth(jwt.SigningMethodES256, testECKey(), "e1", now))
	require.True(t, auth(jwt.SigningMethodRS256, testRSAKey(), "", now), "no kid: any fitting key")
	require.Equal(t, int64(1), s.fetches.Load(), "cached")

	// A key signed with the ES key but claiming the RSA kid fails without a fetch.
	require.False(t, auth(jwt.SigningMethodES256, testECKey(), "k1", now))

	// Unknown kid: no refetch within 30 s of the last fetch, then one, then
	// again none for 30 s.
	require.False(t, auth(jwt.SigningMethodRS256, testRSAKey(), "nope", now.Add(time.Second)))
	require.Equal(t, int64(1), s.fetches.Load())
	require.False(t, auth(jwt.SigningMethodRS256, testRSAKey(), "nope", now.Add(31*time.Second)))
	require.Equal(t, int64(2), s.fetches.Load())
	for i := range 20 {
		require.False(t, auth(jwt.SigningMethodRS256, testRSAKey(), "nope", now.Add(time.Duration(32+i)*time.Second)))
	}
	require.Equal(t, int64(2), s.fetches.Load(), "unknown kid refetch is rate limited")

	// Rotation: the provider adds k2; a k2 token after the wait triggers a fetch.
	k2, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	s.set("max-age=600", rsaJWK("k1", &testRSAKey().PublicKey), rsaJWK("k2", &k2.PublicKey))
	require.True(t, auth(jwt.SigningMethodRS256, k2, "k2", now.Add(62*time.Second)))
	require.Equal(t, int64(3), s.fetches.Load())

	// max-age honoured: no fetch before 600 s after the last one, one after.
	require.True(t, auth(jwt.SigningMethodRS256, testRSAKey(), "k1", now.Add(661*time.Second)))
	require.Equal(t, int64(3), s.fetches.Load())
	s.set("max-age=600", rsaJWK("k2", &k2.PublicKey)) // k1 retired
	require.False(t, auth(jwt.SigningMethodRS256, testRSAKey(), "k1", now.Add(663*time.Second)))
	require.Equal(t, int64(4), s.fetches.Load())
	require.Equal(t, int64(4), c.fetches.Load())

	// A failing provider keeps the old keys, and is retried no more than every 5 s.
	s.mu.Lock()
	s.status = http.StatusInternalServerError
	s.mu.Unlock()
	later := now.Add(663*time.Second + 601*time.Second) // expired
	require.True(t, auth(jwt.SigningMethodRS256, k2, "k2", later), "stale keys used while the provider fails")
	require.True(t, auth(jwt.SigningMethodRS256, k2, "k2", later.Add(time.Second)))
	require.Equal(t, int64(5), s.fetches.Load())
}

func TestJWKSMaxAgeBounds(t *testing.T) {
	require.Equal(t, jwksMinTTL, cacheTTL("max-age=0"))
	require.Equal(t, jwksMinTTL, cacheTTL("no-store"))
	require.Equal(t, jwksMaxTTL, cacheTTL("max-age=99999999999"))
	require.Equal(t, jwksDefaultTTL, cacheTTL(""))
	require.Equal(t, 2*time.Hour, cacheTTL("public, max-age=7200, must-revalidate"))
}

func TestJWKSEdDSAAndConcurrentFetch(t *testing.T) {
	s := newJWKSServer(t)
	s.set("", edJWK("ed", testEdKey().Public().(ed25519.PublicKey)))
	cs := mustCompile(t, Config{JWTAuth: &JWTAuth{JWKSURL: s.srv.URL, Algorithm: schema.StringList{"EdDSA"}}})
	tok := sign(t, jwt.SigningMethodEdDSA, testEdKey(), claims(), "ed")
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			_, ok := doAuth(cs, "/", testNow, withBearer(tok))
			require.True(t, ok)
		})
	}
	wg.Wait()
	require.Equal(t, int64(1), s.fetches.Load(), "concurrent requests share one fetch")
}

func TestParseJWKRejectsBadKeys(t *testing.T) {
	bad := []map[string]string{
		{"kty": "EC", "crv": "P-256", "x": b64(make([]byte, 32)), "y": b64(make([]byte, 32))}, // not on the curve
		{"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"},
		{"kty": "RSA", "n": "!!", "e": "AQAB"},
		{"kty": "OKP", "crv": "X25519", "x": b64(make([]byte, 32))},
		{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
	}
	for _, k := range bad {
		raw, err := json.Marshal(k)
		require.NoError(t, err)
		_, err = parseJWK(raw)
		require.Error(t, err, "%v", k)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	raw, err := json.Marshal(ecJWK("ok", &key.PublicKey))
	require.NoError(t, err)
	k, err := parseJWK(raw)
	require.NoError(t, err)
	require.True(t, key.PublicKey.Equal(k.key))
}
