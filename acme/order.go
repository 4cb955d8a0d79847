package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
)

// Storage layout (all under one Storage, so that processes share it):
//
//	accounts/<directory>/<email>/account.key      the account's private key (PEM)
//	certificates/<directory>/<name>/<name>.pem    chain, then its private key (PEM)
//
// <directory> is the directory URL's host and path made key-safe, so
// certificates of staging and production never mix. The certificate and
// its key are one value: one atomic Store, never a key of another cert.

func dirKey(directoryURL string) string {
	u, err := url.Parse(directoryURL)
	raw := directoryURL
	if err == nil {
		raw = u.Host + u.Path
	}
	k := keySafe(strings.Trim(strings.ReplaceAll(raw, "/", "-"), "-"))
	if len(k) > 100 {
		sum := sha256.Sum256([]byte(directoryURL))
		k = k[:80] + "-" + hex.EncodeToString(sum[:8])
	}
	return k
}

// keySafe maps every character outside the Storage key alphabet to '_'.
func keySafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !keyRune(rune(c)) {
			b[i] = '_'
		}
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		return "_" + string(b)
	}
	return string(b)
}

func certKey(s Settings, name string) string {
	return "certificates/" + dirKey(s.DirectoryURL) + "/" + name + "/" + name + ".pem"
}

func accountKey(s Settings) string {
	email := "default"
	if s.Email != "" {
		email = keySafe(s.Email)
	}
	return "accounts/" + dirKey(s.DirectoryURL) + "/" + email + "/account.key"
}

// loadStored returns the stored certificate for name when it is still
// valid; (nil, nil) when there is one but it has expired or does not
// fit; an error wrapping ErrNotExist when there is none.
func (m *Manager) loadStored(ctx context.Context, s Settings, name string) (*tls.Certificate, error) {
	b, err := m.storage.Load(ctx, certKey(s, name))
	if err != nil {
		return nil, err
	}
	c, err := parseCertPEM(b)
	if err == nil {
		c, err = checkCert(c, name)
	}
	if err != nil {
		m.log.Warn("acme: ignoring stored certificate", "name", name, "err", err)
		return nil, nil
	}
	return c, nil
}

// checkCert fills c.Leaf (on a copy) and checks that c is a usable
// certificate for name now.
func checkCert(c *tls.Certificate, name string) (*tls.Certificate, error) {
	if c == nil || len(c.Certificate) == 0 || c.PrivateKey == nil {
		return nil, fmt.Errorf("acme: certificate for %s: empty or without key", name)
	}
	cc := *c
	leaf, err := x509.ParseCertificate(cc.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("acme: certificate for %s: %w", name, err)
	}
	cc.Leaf = leaf
	if err := leaf.VerifyHostname(name); err != nil {
		return nil, fmt.Errorf("acme: certificate for %s: %w", name, err)
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("acme: certificate for %s expired at %s", name, leaf.NotAfter)
	}
	pub, ok := cc.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("acme: certificate for %s: key is not a crypto.Signer", name)
	}
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub.Public()) {
		return nil, fmt.Errorf("acme: certificate for %s: private key does not match", name)
	}
	return &cc, nil
}

func parseCertPEM(b []byte) (*tls.Certificate, error) {
	var certs, key []byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(blk)...)
		} else if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			key = pem.EncodeToMemory(blk)
		}
	}
	c, err := tls.X509KeyPair(certs, key)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func encodeCertPEM(der [][]byte, key *ecdsa.PrivateKey) ([]byte, error) {
	var buf bytes.Buffer
	for _, d := range der {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	_ = pem.Encode(&buf, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	return buf.Bytes(), nil
}

// order obtains a certificate for e from the CA, under the Locker, after
// checking Storage for one another process (or an earlier run) stored.
// With force, a stored certificate counts only when it is not have.
func (m *Manager) order(ctx context.Context, e *entry, have *tls.Certificate, force bool) (*tls.Certificate, error) {
	unlock, err := m.locker.Lock(ctx, "certificates/"+dirKey(e.set.DirectoryURL)+"/"+e.name)
	if err != nil {
		return nil, fmt.Errorf("acme: lock %s: %w", e.name, err)
	}
	defer func() {
		if err := unlock(); err != nil {
			m.log.Warn("acme: unlock", "name", e.name, "err", err)
		}
	}()
	stored, err := m.loadStored(ctx, e.set, e.name)
	if err != nil && !errors.Is(err, ErrNotExist) {
		return nil, fmt.Errorf("acme: storage: %w", err)
	}
	if stored != nil && time.Now().Before(renewAt(stored, e.set)) {
		same := have != nil && bytes.Equal(have.Certificate[0], stored.Certificate[0])
		if same && !force {
			return have, nil
		}
		if !same {
			return stored, nil
		}
	}
	client, err := m.account(ctx, e.set)
	if err != nil {
		return nil, err
	}
	o, err := client.AuthorizeOrder(ctx, acme.DomainIDs(e.name))
	if err != nil {
		return nil, fmt.Errorf("acme: new order for %s: %w", e.name, err)
	}
	for _, zurl := range o.AuthzURLs {
		if err := m.authorize(ctx, e, client, zurl); err != nil {
			return nil, err
		}
	}
	if o, err = client.WaitOrder(ctx, o.URI); err != nil {
		return nil, fmt.Errorf("acme: order for %s: %w", e.name, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{e.name}}, key)
	if err != nil {
		return nil, err
	}
	der, _, err := client.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, fmt.Errorf("acme: finalize order for %s: %w", e.name, err)
	}
	c, err := checkCert(&tls.Certificate{Certificate: der, PrivateKey: key}, e.name)
	if err != nil {
		return nil, fmt.Errorf("acme: CA issued an unusable certificate: %w", err)
	}
	pemBytes, err := encodeCertPEM(der, key)
	if err != nil {
		return nil, err
	}
	if err := m.storage.Store(ctx, certKey(e.set, e.name), pemBytes); err != nil {
		// Served from memory now; the next run orders again.
		m.log.Error("acme: storing certificate", "name", e.name, "err", err)
	}
	return c, nil
}

// authorize completes one authorization with one challenge: HTTP-01
// unless it is disabled or the previous attempt's HTTP-01 validation
// failed (then TLS-ALPN-01, alternating while both fail).
func (m *Manager) authorize(ctx context.Context, e *entry, client *acme.Client, zurl string) error {
	z, err := client.GetAuthorization(ctx, zurl)
	if err != nil {
		return fmt.Errorf("acme: authorization for %s: %w", e.name, err)
	}
	switch z.Status {
	case acme.StatusValid:
		return nil
	case acme.StatusPending:
	default:
		return fmt.Errorf("acme: authorization for %s is %s", e.name, z.Status)
	}
	useALPN := e.set.DisableHTTP01 || (e.preferALPN && !e.set.DisableTLSALPN)
	want := "http-01"
	if useALPN {
		want = "tls-alpn-01"
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == want {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("acme: CA offers no %s challenge for %s", want, e.name)
	}
	cleanup, err := m.chal.prepare(client, chal, e.name)
	if err != nil {
		return err
	}
	defer cleanup()
	if _, err := client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("acme: accept %s for %s: %w", want, e.name, err)
	}
	if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
		var ae *acme.AuthorizationError
		if errors.As(err, &ae) && !e.set.DisableTLSALPN && !e.set.DisableHTTP01 {
			e.preferALPN = !useALPN
		}
		return fmt.Errorf("acme: %s validation for %s: %w", want, e.name, err)
	}
	return nil
}

// account returns the ACME client of s's directory and email, with the
// account key loaded from Storage or made, stored and registered.
func (m *Manager) account(ctx context.Context, s Settings) (*acme.Client, error) {
	id := s.DirectoryURL + "\x00" + s.Email
	m.acctMu.Lock()
	defer m.acctMu.Unlock()
	if c := m.accounts[id]; c != nil {
		return c, nil
	}
	key := accountKey(s)
	unlock, err := m.locker.Lock(ctx, strings.TrimSuffix(key, "/account.key"))
	if err != nil {
		return nil, fmt.Errorf("acme: lock account: %w", err)
	}
	defer func() { _ = unlock() }()
	var signer crypto.Signer
	b, err := m.storage.Load(ctx, key)
	switch {
	case err == nil:
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("acme: stored account key %s: not PEM", key)
		}
		if signer, err = x509.ParseECPrivateKey(blk.Bytes); err != nil {
			return nil, fmt.Errorf("acme: stored account key %s: %w", key, err)
		}
	case errors.Is(err, ErrNotExist):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		if err := m.storage.Store(ctx, key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})); err != nil {
			return nil, fmt.Errorf("acme: store account key: %w", err)
		}
		signer = k
	default:
		return nil, fmt.Errorf("acme: storage: %w", err)
	}
	c := &acme.Client{Key: signer, DirectoryURL: s.DirectoryURL, HTTPClient: m.client, UserAgent: "smartproxy", RetryBackoff: requestRetry}
	acct := &acme.Account{}
	if s.Email != "" {
		acct.Contact = []string{"mailto:" + s.Email}
	}
	if _, err := c.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("acme: register account at %s: %w", s.DirectoryURL, err)
	}
	m.accounts[id] = c
	return c, nil
}
