package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gosmartproxy/smartproxy/schema"
)

// JWTAuth requires a valid JSON Web Token on a route. Exactly one key
// source is set: Secret (HS*), PublicKey (RS*, PS*, ES*, EdDSA) or
// JWKSURL. The token comes from "Authorization: Bearer", or else from the
// cookie CookieName.
type JWTAuth struct {
	// Enabled switches the check; nil means true (see BasicAuth.Enabled).
	Enabled *bool `json:"enabled,omitempty"`
	// Secret is the HMAC key for HS256/HS384/HS512.
	Secret string `json:"secret,omitempty"`
	// PublicKey is a PEM public key (or certificate) for RS*, PS*, ES* or
	// EdDSA.
	PublicKey string `json:"publicKey,omitempty"`
	// JWKSURL is an http(s) URL of a JSON Web Key Set. Keys are cached as
	// long as the response's Cache-Control max-age says, within 1 minute
	// and 24 hours (5 minutes without max-age); a token with an unknown
	// "kid" triggers a refetch at most every 30 seconds.
	JWKSURL string `json:"jwksUrl,omitempty"`
	// Algorithm lists the accepted "alg" values, e.g. "RS256" or
	// ["ES256", "EdDSA"]. Required: accepting whatever the token names is
	// how "none" and HS/RS confusion attacks work. HS* algorithms only go
	// with Secret, the others only with PublicKey or JWKSURL.
	Algorithm schema.StringList `json:"algorithm,omitempty"`
	// Issuer, when set, must equal the token's "iss".
	Issuer string `json:"issuer,omitempty"`
	// Audience, when set, must include one of the token's "aud" values.
	Audience schema.StringList `json:"audience,omitempty"`
	// Leeway is the clock skew tolerated for exp and nbf; 0 means
	// DefaultJWTLeeway (30 s), negative means none.
	Leeway schema.Seconds `json:"leeway,omitempty"`
	// CookieName, when set, is read for the token when there is no
	// Authorization header.
	CookieName string `json:"cookieName,omitempty"`
	// Realm is sent in the WWW-Authenticate challenge; default
	// "Restricted".
	Realm string `json:"realm,omitempty"`
	// ExcludePaths are request paths served without a token (see
	// BasicAuth.ExcludePaths).
	ExcludePaths []string `json:"excludePaths,omitempty"`
}

// DefaultJWTLeeway is the clock skew tolerated for exp and nbf.
const DefaultJWTLeeway = 30 * time.Second

// maxTokenBytes bounds what is parsed: real tokens are a few hundred bytes
// and parsing means base64 and JSON decoding.
const maxTokenBytes = 8 << 10

// jwtAuth is a compiled JWTAuth.
type jwtAuth struct {
	opts             []jwt.ParserOption // without the time func, which is per request
	key              any                // []byte or a public key; nil with JWKS
	jwks             *jwksCache
	cookie           string
	challenge        string // WWW-Authenticate without a token
	challengeInvalid string // with a bad token
	exclude          *pathSet
}

// jwtFamily groups algorithms by the key type they need.
func jwtFamily(alg string) string {
	switch alg {
	case "HS256", "HS384", "HS512":
		return "hmac"
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return "rsa"
	case "ES256", "ES384", "ES512":
		return "ecdsa"
	case "EdDSA":
		return "eddsa"
	}
	return ""
}

func compileJWTAuth(fe *schema.Collector, j *JWTAuth) *jwtAuth {
	if j.Enabled != nil && !*j.Enabled {
		return nil
	}
	const field = "jwtAuth"
	ja := &jwtAuth{cookie: j.CookieName, exclude: compilePathSet(fe, field+".excludePaths", j.ExcludePaths)}
	sources := 0
	for _, set := range []bool{j.Secret != "", j.PublicKey != "", j.JWKSURL != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		fe.Failf(field, "exactly one of secret, publicKey or jwksUrl is required, got %d", sources)
	}
	algs := checkJWTAlgorithms(fe, field+".algorithm", j)
	switch {
	case j.Secret != "":
		ja.key = []byte(j.Secret)
	case j.PublicKey != "":
		pub, err := parsePublicKeyPEM(j.PublicKey)
		if err != nil {
			fe.Fail(field+".publicKey", err)
			break
		}
		for _, a := range algs {
			if !keyFitsAlg(pub, a) {
				fe.Failf(field+".publicKey", "a %T cannot verify %s", pub, a)
			}
		}
		ja.key = pub
	case j.JWKSURL != "":
		u, err := url.Parse(j.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			fe.Failf(field+".jwksUrl", "must be an absolute http(s) URL, got %q", j.JWKSURL)
			break
		}
		ja.jwks = newJWKSCache(j.JWKSURL)
	}
	leeway := DefaultJWTLeeway
	if j.Leeway != 0 {
		leeway = max(j.Leeway, 0).Duration()
	}
	ja.opts = []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
	}
	if j.Issuer != "" {
		ja.opts = append(ja.opts, jwt.WithIssuer(j.Issuer))
	}
	if len(j.Audience) > 0 {
		ja.opts = append(ja.opts, jwt.WithAudience(j.Audience...))
	}
	realm := j.Realm
	if realm == "" {
		realm = "Restricted"
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		fe.Failf(field+".realm", "must not contain quotes, backslashes or line breaks")
	}
	ja.challenge = `Bearer realm="` + realm + `"`
	ja.challengeInvalid = ja.challenge + `, error="invalid_token"`
	return ja
}

// checkJWTAlgorithms validates algorithm against the key source.
func checkJWTAlgorithms(fe *schema.Collector, field string, j *JWTAuth) []string {
	if len(j.Algorithm) == 0 {
		fe.Failf(field, "is required: list the accepted algorithms (e.g. RS256)")
		return nil
	}
	var algs []string
	for i, a := range j.Algorithm {
		f := fmt.Sprintf("%s[%d]", field, i)
		fam := jwtFamily(a)
		switch {
		case strings.EqualFold(a, "none"):
			fe.Failf(f, `"none" is never accepted`)
		case fam == "":
			fe.Failf(f, "unknown algorithm %q (want HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA)", a)
		case fam == "hmac" && j.Secret == "":
			fe.Failf(f, "%s needs secret (HS algorithms with a public key are the HS/RS confusion attack)", a)
		case fam != "hmac" && j.Secret != "":
			fe.Failf(f, "%s needs publicKey or jwksUrl, not secret", a)
		case slices.Contains(algs, a):
		default:
			algs = append(algs, a)
		}
	}
	return algs
}

// parsePublicKeyPEM reads a PKIX or PKCS#1 public key, or a certificate.
func parsePublicKeyPEM(s string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing public key: %w", err)
		}
		return k, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing RSA public key: %w", err)
		}
		return k, nil
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a public key or certificate (never configure a private key here)", block.Type)
}

// keyFitsAlg reports whether key can verify alg (ECDSA keys only the
// algorithm of their curve).
func keyFitsAlg(key crypto.PublicKey, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return jwtFamily(alg) == "rsa"
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// verify checks the request's token at now.
func (j *jwtAuth) verify(r *http.Request, now time.Time) error {
	tok := bearerToken(r)
	if tok == "" && j.cookie != "" {
		if c, err := r.Cookie(j.cookie); err == nil {
			tok = c.Value
		}
	}
	if tok == "" {
		return errNoCredentials
	}
	if len(tok) > maxTokenBytes {
		return fmt.Errorf("jwt: token of %d bytes exceeds %d", len(tok), maxTokenBytes)
	}
	opts := append(slices.Clip(j.opts), jwt.WithTimeFunc(func() time.Time { return now }))
	keyFunc := func(t *jwt.Token) (any, error) { return j.key, nil }
	if j.jwks != nil {
		keyFunc = func(t *jwt.Token) (any, error) {
			kid, _ := t.Header["kid"].(string)
			return j.jwks.keyFor(r.Context(), kid, t.Method.Alg(), now)
		}
	}
	if _, err := jwt.NewParser(opts...).ParseWithClaims(tok, &jwt.RegisteredClaims{}, keyFunc); err != nil {
		return fmt.Errorf("jwt: %w", err)
	}
	return nil
}

// bearerToken returns the token of "Authorization: Bearer <token>" (the
// scheme is case-insensitive), or "".
func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		return strings.TrimSpace(h[len(prefix):])
	}
	return ""
}
