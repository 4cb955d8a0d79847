package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/schema"
)

// Test keys, generated once per run.
var (
	testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	testECKey = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
	testEdKey = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func pubPEM(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// testNow is the fixed clock of the JWT tests.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// claims returns standard valid claims at testNow.
func claims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "alice", "iss": "https://issuer.test", "aud": "api",
		"iat": testNow.Unix(), "nbf": testNow.Add(-time.Minute).Unix(), "exp": testNow.Add(time.Hour).Unix(),
	}
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func withBearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func TestJWTAlgorithms(t *testing.T) {
	secret := strings.Repeat("k", 64)
	cases := []struct {
		name string
		cfg  JWTAuth
		m    jwt.SigningMethod
		key  any
	}{
		{"HS256", JWTAuth{Secret: secret, Algorithm: schema.StringList{"HS256"}}, jwt.SigningMethodHS256, []byte(secret)},
		{"HS384", JWTAuth{Secret: secret, Algorithm: schema.StringList{"HS384"}}, jwt.SigningMethodHS384, []byte(secret)},
		{"HS512", JWTAuth{Secret: secret, Algorithm: schema.StringList{"HS512"}}, jwt.SigningMethodHS512, []byte(secret)},
		{"RS256", JWTAuth{PublicKey: pubPEM(t, &testRSAKey().PublicKey), Algorithm: schema.StringList{"RS256"}}, jwt.SigningMethodRS256, testRSAKey()},
		{"ES256", JWTAuth{PublicKey: pubPEM(t, &testECKey().PublicKey), Algorithm: schema.StringList{"ES256"}}, jwt.SigningMethodES256, testECKey()},
		{"EdDSA", JWTAuth{PublicKey: pubPEM(t, testEdKey().Public()), Algorithm: schema.StringList{"EdDSA"}}, jwt.SigningMethodEdDSA, testEdKey()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.Issuer, cfg.Audience = "https://issuer.test", schema.StringList{"api", "other"}
			cs := mustCompile(t, Config{JWTAuth: &cfg})
			_, ok := doAuth(cs, "/", testNow, withBearer(sign(t, c.m, c.key, claims(), "")))
			require.True(t, ok, "valid token")

			bad := func(name string, mod func(jwt.MapClaims)) {
				cl := claims()
				mod(cl)
				w, ok := doAuth(cs, "/", testNow, withBearer(sign(t, c.m, c.key, cl, "")))
				require.False(t, ok, name)
				require.Equal(t, http.StatusUnauthorized, w.Code, name)
				require.Contains(t, w.Header().Get("WWW-Authenticate"), `error="invalid_token"`, name)
			}
			bad("expired", func(cl jwt.MapClaims) { cl["exp"] = testNow.Add(-time.Minute).Unix() })
			bad("no exp", func(cl jwt.MapClaims) { delete(cl, "exp") })
			bad("not yet valid", func(cl jwt.MapClaims) { cl["nbf"] = testNow.Add(time.Minute).Unix() })
			bad("wrong issuer", func(cl jwt.MapClaims) { cl["iss"] = "https://evil.test" })
			bad("wrong audience", func(cl jwt.MapClaims) { cl["aud"] = "web" })
			// Within the default 30 s leeway.
			cl := claims()
			cl["exp"] = testNow.Add(-20 * time.Second).Unix()
			cl["nbf"] = testNow.Add(20 * time.Second).Unix()
			_, ok = doAuth(cs, "/", testNow, withBearer(sign(t, c.m, c.key, cl, "")))
			require.True(t, ok, "leeway")
		})
	}
}

func TestJWTRejectsNoneAndConfusion(t *testing.T) {
	pubPEMText := pubPEM(t, &testRSAKey().PublicKey)
	cs := mustCompile(t, Config{JWTAuth: &JWTAuth{PublicKey: pubPEMText, Algorithm: schema.StringList{"RS256"}}})

	// alg none.
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(), "")
	_, ok := doAuth(cs, "/", testNow, withBearer(none))
	require.False(t, ok, "alg none")
	// Hand-made "none" with an empty signature and odd casing.
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"NONE","typ":"JWT"}`))
	body := strings.Split(none, ".")[1]
	_, ok = doAuth(cs, "/", testNow, withBearer(hdr+"."+body+"."))
	require.False(t, ok, "alg NONE")

	// HS/RS confusion: HS256 keyed with the RSA public key PEM.
	confused := sign(t, jwt.SigningMethodHS256, []byte(pubPEMText), claims(), "")
	_, ok = doAuth(cs, "/", testNow, withBearer(confused))
	require.False(t, ok, "HS256 signed with the public key")

	// Tampered payload.
	good := sign(t, jwt.SigningMethodRS256, testRSAKey(), claims(), "")
	parts := strings.Split(good, ".")
	cl := claims()
	cl["sub"] = "mallory"
	forged := strings.Split(sign(t, jwt.SigningMethodRS256, testRSAKey(), cl, ""), ".")[1]
	_, ok = doAuth(cs, "/", testNow, withBearer(parts[0]+"."+forged+"."+parts[2]))
	require.False(t, ok, "tampered")
	_, ok = doAuth(cs, "/", testNow, withBearer(good))
	require.True(t, ok)

	// Oversized token.
	_, ok = doAuth(cs, "/", testNow, withBearer(strings.Repeat("a", maxTokenBytes+1)))
	require.False(t, ok)
}

func TestJWTTokenSources(t *testing.T) {
	secret := strings.Repeat("s", 32)
	cs := mustCompile(t, Config{JWTAuth: &JWTAuth{
		Secret: secret, Algorithm: schema.StringList{"HS256"}, CookieName: "session",
		ExcludePaths: []string{"/login"},
	}})
	tok := sign(t, jwt.SigningMethodHS256, []byte(secret), claims(), "")
	_, ok := doAuth(cs, "/", testNow, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+tok) })
	require.True(t, ok, "scheme is case-insensitive")
	_, ok = doAuth(cs, "/", testNow, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session", Value: tok}) })
	require.True(t, ok, "cookie")
	w, ok := doAuth(cs, "/", testNow, nil)
	require.False(t, ok)
	require.Equal(t, `Bearer realm="Restricted"`, w.Header().Get("WWW-Authenticate"), "no error code without a token")
	_, ok = doAuth(cs, "/login", testNow, nil)
	require.True(t, ok, "excluded path")
}

// TestBasicOrJWT: with both schemes, either one admits the request, and
// the 401 offers both challenges.
func TestBasicOrJWT(t *testing.T) {
	secret := strings.Repeat("s", 32)
	cs := mustCompile(t, Config{
		BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}},
		JWTAuth:   &JWTAuth{Secret: secret, Algorithm: schema.StringList{"HS256"}},
	})
	_, ok := doAuth(cs, "/", testNow, withBasic("u", "p"))
	require.True(t, ok)
	_, ok = doAuth(cs, "/", testNow, withBearer(sign(t, jwt.SigningMethodHS256, []byte(secret), claims(), "")))
	require.True(t, ok)
	w, ok := doAuth(cs, "/", testNow, withBasic("u", "x"))
	require.False(t, ok)
	require.Len(t, w.Header().Values("WWW-Authenticate"), 2)
}

func TestJWTCompileErrors(t *testing.T) {
	rsaPEM := pubPEM(t, &testRSAKey().PublicKey)
	cases := []struct {
		name   string
		cfg    JWTAuth
		fields []string
	}{
		{"no key", JWTAuth{Algorithm: schema.StringList{"HS256"}}, []string{"jwtAuth", "jwtAuth.algorithm[0]"}},
		{"two keys", JWTAuth{Secret: "x", PublicKey: rsaPEM, Algorithm: schema.StringList{"HS256"}}, []string{"jwtAuth"}},
		{"no algorithm", JWTAuth{Secret: "x"}, []string{"jwtAuth.algorithm"}},
		{"none", JWTAuth{Secret: "x", Algorithm: schema.StringList{"none"}}, []string{"jwtAuth.algorithm[0]"}},
		{"unknown", JWTAuth{Secret: "x", Algorithm: schema.StringList{"HS1"}}, []string{"jwtAuth.algorithm[0]"}},
		{"HS with public key", JWTAuth{PublicKey: rsaPEM, Algorithm: schema.StringList{"RS256", "HS256"}}, []string{"jwtAuth.algorithm[1]"}},
		{"RS with secret", JWTAuth{Secret: "x", Algorithm: schema.StringList{"RS256"}}, []string{"jwtAuth.algorithm[0]"}},
		{"key does not fit", JWTAuth{PublicKey: rsaPEM, Algorithm: schema.StringList{"ES256"}}, []string{"jwtAuth.publicKey"}},
		{"bad PEM", JWTAuth{PublicKey: "nope", Algorithm: schema.StringList{"RS256"}}, []string{"jwtAuth.publicKey"}},
		{"private key", JWTAuth{PublicKey: "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", Algorithm: schema.StringList{"RS256"}}, []string{"jwtAuth.publicKey"}},
		{"bad jwks url", JWTAuth{JWKSURL: "ftp://x", Algorithm: schema.StringList{"RS256"}}, []string{"jwtAuth.jwksUrl"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			_, err := Compile(Config{JWTAuth: &cfg})
			requireFields(t, err, c.fields...)
		})
	}
}
