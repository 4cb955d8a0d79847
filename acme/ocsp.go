package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP stapling of ACME certificates whose leaf names an OCSP server.
// The response is fetched by the name's worker when the certificate is
// obtained (or loaded) and again halfway between its ThisUpdate and
// NextUpdate, so a staple is always current; a failed refresh keeps the
// old staple while it is still valid and is retried with the order
// backoff. A response saying "revoked" makes the worker order a new
// certificate at once.

const maxOCSPResponse = 64 << 10

// fetchOCSP asks leaf's OCSP server about leaf and checks the response.
func (m *Manager) fetchOCSP(ctx context.Context, c *tls.Certificate) (*ocsp.Response, []byte, error) {
	if len(c.Certificate) < 2 {
		return nil, nil, fmt.Errorf("acme: ocsp: chain has no issuer")
	}
	issuer, err := x509.ParseCertificate(c.Certificate[1])
	if err != nil {
		return nil, nil, fmt.Errorf("acme: ocsp: issuer: %w", err)
	}
	req, err := ocsp.CreateRequest(c.Leaf, issuer, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("acme: ocsp: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Leaf.OCSPServer[0], bytes.NewReader(req))
	if err != nil {
		return nil, nil, fmt.Errorf("acme: ocsp: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := m.client.Do(hreq)
	if err != nil {
		return nil, nil, fmt.Errorf("acme: ocsp: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("acme: ocsp: responder answered %s", resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return nil, nil, fmt.Errorf("acme: ocsp: %w", err)
	}
	if len(raw) > maxOCSPResponse {
		return nil, nil, fmt.Errorf("acme: ocsp: response over %d bytes", maxOCSPResponse)
	}
	r, err := ocsp.ParseResponseForCert(raw, c.Leaf, issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("acme: ocsp: %w", err)
	}
	if !r.NextUpdate.IsZero() && !time.Now().Before(r.NextUpdate) {
		return nil, nil, fmt.Errorf("acme: ocsp: response already stale (NextUpdate %s)", r.NextUpdate)
	}
	return r, raw, nil
}

// stapled returns c with a fresh OCSP staple (a copy; c may be served
// already), or c itself when none could be had; it sets e.ocspNext.
func (m *Manager) stapled(ctx context.Context, e *entry, c *tls.Certificate) *tls.Certificate {
	r, raw, err := m.fetchOCSP(ctx, c)
	now := time.Now()
	if err != nil {
		e.ocspFailures++
		e.ocspNext = now.Add(m.backoff(e.ocspFailures, err))
		m.log.Warn("acme: OCSP staple", "name", e.name, "err", err, "next", e.ocspNext)
		if c.OCSPStaple != nil {
			if old, perr := ocsp.ParseResponse(c.OCSPStaple, nil); perr == nil && !old.NextUpdate.IsZero() && now.After(old.NextUpdate) {
				cc := *c
				cc.OCSPStaple = nil // never staple a stale response
				return &cc
			}
		}
		return c
	}
	e.ocspFailures = 0
	if r.Status == ocsp.Revoked {
		m.log.Error("acme: certificate revoked, ordering a new one", "name", e.name, "serial", c.Leaf.SerialNumber.Text(16))
		e.ocspNext = time.Time{}
		e.revoked = true
		cc := *c
		cc.OCSPStaple = nil
		return &cc
	}
	if r.Status != ocsp.Good {
		e.ocspNext = now.Add(m.backoff(1, nil))
		return c
	}
	next := now.Add(12 * time.Hour)
	if !r.NextUpdate.IsZero() {
		next = r.ThisUpdate.Add(r.NextUpdate.Sub(r.ThisUpdate) / 2)
		if next.Before(now) {
			next = now.Add(r.NextUpdate.Sub(now) / 2)
		}
	}
	e.ocspNext = next
	cc := *c
	cc.OCSPStaple = raw
	return &cc
}

// refreshOCSP replaces the served certificate of e by one with a fresh
// staple.
func (m *Manager) refreshOCSP(ctx context.Context, e *entry, have *tls.Certificate) {
	c := m.stapled(ctx, e, have)
	if c == have {
		return
	}
	// Swap only if the certificate was not replaced meanwhile (only this
	// worker replaces it, but be exact).
	e.cert.CompareAndSwap(have, c)
}
