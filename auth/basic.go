package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/gosmartproxy/smartproxy/schema"
)

// BasicAuth requires HTTP Basic credentials (RFC 7617) on a route.
type BasicAuth struct {
	// Enabled switches the check; nil means true, so a basicAuth block
	// written without "enabled" protects the route rather than being
	// silently ignored. Set false to opt a route out of a default.
	Enabled *bool `json:"enabled,omitempty"`
	// Users are the accepted credentials. Required when enabled.
	Users []BasicAuthUser `json:"users,omitempty"`
	// Realm is sent in the WWW-Authenticate challenge; default
	// "Restricted".
	Realm string `json:"realm,omitempty"`
	// ExcludePaths are request paths served without credentials: globs
	// with '/' as separator ("/health", "/public/*", "/static/**").
	ExcludePaths []string `json:"excludePaths,omitempty"`
}

// BasicAuthUser is one user. Password is plaintext, or a bcrypt hash
// ("$2a$", "$2b$" or "$2y$" prefix) so the config need not hold it in
// clear.
type BasicAuthUser struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// basicAuth is a compiled BasicAuth.
type basicAuth struct {
	users     map[string]basicCred
	dummy     basicCred // checked for unknown users, so timing hides who exists
	challenge string    // the WWW-Authenticate value
	exclude   *pathSet
	verified  verifiedCache
}

// basicCred is one user's secret: a bcrypt hash, or the digest of a
// plaintext password. Comparing digests makes the comparison constant
// time whatever the lengths of the stored and the sent password.
type basicCred struct {
	bcrypt []byte
	digest [sha256.Size]byte
}

func isBcrypt(p string) bool {
	return strings.HasPrefix(p, "$2a$") || strings.HasPrefix(p, "$2b$") || strings.HasPrefix(p, "$2y$")
}

func compileBasicAuth(fe *schema.Collector, b *BasicAuth) *basicAuth {
	if b.Enabled != nil && !*b.Enabled {
		return nil
	}
	const field = "basicAuth"
	if len(b.Users) == 0 {
		fe.Failf(field+".users", "at least one user is required when basicAuth is enabled")
	}
	realm := b.Realm
	if realm == "" {
		realm = "Restricted"
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		fe.Failf(field+".realm", "must not contain quotes, backslashes or line breaks")
	}
	ba := &basicAuth{
		users:     make(map[string]basicCred, len(b.Users)),
		challenge: `Basic realm="` + realm + `", charset="UTF-8"`,
		exclude:   compilePathSet(fe, field+".excludePaths", b.ExcludePaths),
	}
	maxCost := 0
	for i, u := range b.Users {
		f := fmt.Sprintf("%s.users[%d]", field, i)
		switch {
		case u.Username == "":
			fe.Failf(f+".username", "is required")
		case strings.Contains(u.Username, ":"):
			fe.Failf(f+".username", "must not contain ':' (RFC 7617)")
		}
		if _, dup := ba.users[u.Username]; dup {
			fe.Failf(f+".username", "duplicate user %q", u.Username)
		}
		if u.Password == "" {
			fe.Failf(f+".password", "is required")
			continue
		}
		var c basicCred
		if isBcrypt(u.Password) {
			cost, err := bcrypt.Cost([]byte(u.Password))
			if err != nil {
				fe.Fail(f+".password", fmt.Errorf("looks like a bcrypt hash but is invalid: %w", err))
				continue
			}
			maxCost = max(maxCost, cost)
			c.bcrypt = []byte(u.Password)
		} else {
			c.digest = sha256.Sum256([]byte(u.Password))
		}
		ba.users[u.Username] = c
	}
	if maxCost > 0 {
		// The slowest real hash sets the dummy's cost, so an unknown user
		// never answers faster than the known ones.
		ba.dummy.bcrypt = dummyBcrypt(maxCost)
	}
	return ba
}

// dummyHashes caches one bcrypt hash per cost: generating one takes as
// long as checking one, which should not be paid on every route reload.
var dummyHashes sync.Map // int -> []byte

func dummyBcrypt(cost int) []byte {
	if h, ok := dummyHashes.Load(cost); ok {
		return h.([]byte)
	}
	h, err := bcrypt.GenerateFromPassword([]byte("smartproxy-dummy-password"), cost)
	if err != nil {
		panic(fmt.Sprintf("bcrypt dummy hash at cost %d: %v", cost, err)) // cost came from a valid hash
	}
	dummyHashes.Store(cost, h)
	return h
}

// verify checks the request's Basic credentials.
func (b *basicAuth) verify(r *http.Request) error {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return errNoCredentials
	}
	c, known := b.users[user]
	if !known {
		c = b.dummy
	}
	if !b.check(&c, user, pass) || !known {
		return fmt.Errorf("basic auth: bad credentials for user %q", user)
	}
	return nil
}

// check compares pass with c in constant time (for plaintext) or with
// bcrypt. A bcrypt success is remembered, because browsers resend the
// credentials with every request and a bcrypt check costs milliseconds.
func (b *basicAuth) check(c *basicCred, user, pass string) bool {
	if c.bcrypt == nil {
		d := sha256.Sum256([]byte(pass))
		return subtle.ConstantTimeCompare(d[:], c.digest[:]) == 1
	}
	key := b.verified.key(user, pass)
	if b.verified.has(key) {
		return true
	}
	if bcrypt.CompareHashAndPassword(c.bcrypt, []byte(pass)) != nil {
		return false
	}
	b.verified.add(key)
	return true
}

// verifiedCache remembers recently verified bcrypt credentials by a keyed
// hash (never the password itself). Bounded: it is cleared when full,
// which only costs a bcrypt check per client afterwards.
type verifiedCache struct {
	once   sync.Once
	secret [32]byte
	mu     sync.Mutex
	m      map[[sha256.Size]byte]struct{}
}

const verifiedCacheMax = 1024

func (v *verifiedCache) key(user, pass string) [sha256.Size]byte {
	v.once.Do(func() { _, _ = rand.Read(v.secret[:]) }) // crypto/rand.Read never fails
	mac := hmac.New(sha256.New, v.secret[:])
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write([]byte(pass))
	var k [sha256.Size]byte
	mac.Sum(k[:0])
	return k
}

func (v *verifiedCache) has(k [sha256.Size]byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.m[k]
	return ok
}

func (v *verifiedCache) add(k [sha256.Size]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= verifiedCacheMax {
		v.m = make(map[[sha256.Size]byte]struct{})
	}
	v.m[k] = struct{}{}
}
