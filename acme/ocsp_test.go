package acme_test

import (
	"crypto"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
	"golang.org/x/crypto/ocsp"
)

// ocspResponder answers OCSP for Pebble's intermediate, with responses
// valid for 4 s, "revoked" for the serial in revoke.
type ocspResponder struct {
	issuer *x509.Certificate
	key    crypto.Signer
	hits   atomic.Int32
	mu     sync.Mutex
	revoke *big.Int
}

func (o *ocspResponder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil || o.issuer == nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	o.hits.Add(1)
	now := time.Now().Truncate(time.Second)
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(4 * time.Second)}
	o.mu.Lock()
	if o.revoke != nil && o.revoke.Cmp(req.SerialNumber) == 0 {
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, now, ocsp.KeyCompromise
	}
	o.mu.Unlock()
	resp, err := ocsp.CreateResponse(o.issuer, o.issuer, tmpl, o.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(resp)
}

// TestOCSPStapling: Pebble writes the test's loopback responder into
// its leaves; the Manager staples its answer, refreshes it before the
// response's NextUpdate, and orders a new certificate when the responder
// says the served one is revoked.
func TestOCSPStapling(t *testing.T) {
	t.Parallel()
	respLn, tlsLn := listen(t), listen(t)
	resp := &ocspResponder{}
	serveHTTP(t, respLn, resp)
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true, OCSPResponderURL: "http://" + respLn.Addr().String() + "/"})
	resp.issuer, resp.key = p.Intermediate(t), p.IntermediateKey(t)
	evs := newEvents()
	cfg := acme.Config{OnEvent: evs.on}
	acme.SetBackoff(&cfg, 200*time.Millisecond, time.Second)
	m := newManager(t, p, cfg)
	serveTLS(t, tlsLn, m.GetCertificate)
	manageStart(t, m, evs)
	roots := p.Roots(t)
	staple := func() *ocsp.Response {
		t.Helper()
		c, err := dialTLS(t, tlsLn.Addr().String(), "localhost", roots)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs := c.ConnectionState()
		if len(cs.OCSPResponse) == 0 {
			t.Fatal("no OCSP staple")
		}
		r, err := ocsp.ParseResponseForCert(cs.OCSPResponse, cs.PeerCertificates[0], cs.PeerCertificates[1])
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := staple()
	if first.Status != ocsp.Good {
		t.Fatalf("staple status %d", first.Status)
	}
	// Refreshed halfway to NextUpdate (2 s), so before it goes stale.
	deadline := time.Now().Add(20 * time.Second)
	for resp.hits.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	second := staple()
	if !second.ThisUpdate.After(first.ThisUpdate) || time.Now().After(second.NextUpdate) {
		t.Fatalf("staple not refreshed: first %v, now %v (next %v)", first.ThisUpdate, second.ThisUpdate, second.NextUpdate)
	}

	// Revoked: a new certificate is ordered at once.
	resp.mu.Lock()
	resp.revoke = second.SerialNumber
	resp.mu.Unlock()
	ev := evs.wait(t, acme.EventRenewed, "localhost", 30*time.Second)
	if ev.Status.Serial == second.SerialNumber.Text(16) {
		t.Fatal("renewed to the revoked serial")
	}
	if o := p.Orders(); o != 2 {
		t.Fatalf("%d orders, want 2", o)
	}
}
