package acme_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// TestCAFailureBackoff: the HTTP-01 port answers every challenge wrong
// (and nothing listens for TLS-ALPN-01), so every order fails. The name
// goes to state error with a next attempt, handshakes fail at once (no
// wait for a retry), and the attempts over a window follow the
// exponential backoff instead of a tight loop.
func TestCAFailureBackoff(t *testing.T) {
	t.Parallel()
	httpLn := listen(t)
	serveHTTP(t, httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("not the key authorization"))
	}))
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: portOf(httpLn)})
	evs := newEvents()
	base := 200 * time.Millisecond
	cfg := acme.Config{Settings: acme.Settings{HTTPPort: portOf(httpLn)}, OnEvent: evs.on}
	acme.SetBackoff(&cfg, base, 10*time.Second)
	m := newManager(t, p, cfg)
	ctx := context.Background()
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ev := evs.wait(t, acme.EventFailed, "localhost", 60*time.Second)
	if ev.Err == nil || ev.Status.State != acme.StateError || ev.Status.LastError == "" || !ev.Status.NextAttempt.After(time.Now().Add(-time.Second)) {
		t.Fatalf("failed event: %+v", ev)
	}
	st := status(t, m, "localhost")
	if st.State != acme.StateError && st.State != acme.StateRenewing {
		t.Fatalf("status after failure: %+v", st)
	}
	// A handshake for the failed name fails promptly with an error.
	t0 := time.Now()
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"}); err == nil {
		t.Fatal("certificate served for a name whose order failed")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("handshake for a failed name waited %v", d)
	}

	// Watch for a window: attempt n waits between base·2^(n-1)/2 and
	// base·2^(n-1), so 4 s hold at most ~7 attempts; a tight loop would
	// make hundreds.
	time.Sleep(4 * time.Second)
	window := time.Since(start)
	evs.mu.Lock()
	var at, next []time.Time
	for i, e := range evs.evs {
		if e.Kind == acme.EventFailed {
			at = append(at, evs.at[i])
			next = append(next, e.Status.NextAttempt)
		}
	}
	evs.mu.Unlock()
	orders := p.Orders()
	t.Logf("%d failed attempts and %d orders in %v", len(at), orders, window)
	if len(at) < 3 || len(at) > 9 || orders > len(at)+1 {
		t.Fatalf("%d failures, %d orders in %v: not the backoff schedule", len(at), orders, window)
	}
	// Each failure schedules the next attempt base·2^(n-1) away, less up
	// to half of it (equal jitter), and the next attempt waits for it.
	// The waits are read off the failure events, not off the gaps between
	// them: a gap also holds the next attempt's own run, which under load
	// takes a second.
	var waits []time.Duration
	for i := range at {
		w := next[i].Sub(at[i]) // at is taken just after the schedule: w is a little short
		waits = append(waits, w)
		hi := base << i
		if w < hi/2-100*time.Millisecond || w > hi {
			t.Errorf("failure %d scheduled the next attempt %v later, want %v to %v", i+1, w, hi/2, hi)
		}
		if i+1 < len(at) && at[i+1].Before(next[i]) {
			t.Errorf("attempt %d failed at %v, before its scheduled start %v", i+2, at[i+1], next[i])
		}
	}
	t.Logf("scheduled waits %v", waits)
	// NextAttempt is zero only while an attempt runs.
	st = status(t, m, "localhost")
	if st.State != acme.StateError || st.LastError == "" {
		t.Fatalf("status: %+v", st)
	}
}

// TestConcurrentFirstHandshakes: 50 handshakes for a name without a
// certificate arrive together; they all wait for the one order and get
// its certificate.
func TestConcurrentFirstHandshakes(t *testing.T) {
	t.Parallel()
	tlsLn := listen(t)
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	m := newManager(t, p, acme.Config{HandshakeWait: 60 * time.Second})
	serveTLS(t, tlsLn, func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := m.GetCertificate(h)
		if err != nil {
			t.Errorf("GetCertificate: %v", err)
		}
		return c, err
	})
	ctx := context.Background()
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	roots := p.Roots(t)
	const n = 50
	var wg sync.WaitGroup
	serials := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialTLS(t, tlsLn.Addr().String(), "localhost", roots)
			if err != nil {
				errs[i] = err
				return
			}
			serials[i] = c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
			c.Close()
		}()
	}
	time.Sleep(300 * time.Millisecond) // let the hellos arrive and wait
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, s := range serials {
		if s != serials[0] {
			t.Fatalf("different serials %v", serials)
		}
	}
	if o := p.Orders(); o != 1 {
		t.Fatalf("%d orders for %d concurrent first handshakes, want 1", o, n)
	}
}

// TestTwoManagersOneStorage: two Managers (as two proxy processes would)
// share one FileStorage directory and start together; the lock makes
// one order and the other load it.
func TestTwoManagersOneStorage(t *testing.T) {
	t.Parallel()
	t.Run("FileStorage", func(t *testing.T) {
		t.Parallel()
		twoManagers(t, acme.NewFileStorage(t.TempDir()))
	})
	// A Storage without a Locker: the Managers of one process still
	// share the in-process lock.
	t.Run("no Locker", func(t *testing.T) {
		t.Parallel()
		twoManagers(t, plainStorage{acme.NewFileStorage(t.TempDir())})
	})
}

// plainStorage hides FileStorage's Lock method.
type plainStorage struct{ acme.Storage }

func twoManagers(t *testing.T, store acme.Storage) {
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	ctx := context.Background()
	var ms []*acme.Manager
	var evss []*events
	for range 2 {
		evs := newEvents()
		m := newManager(t, p, acme.Config{Storage: store, OnEvent: evs.on})
		if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
			t.Fatal(err)
		}
		ms, evss = append(ms, m), append(evss, evs)
	}
	for _, m := range ms {
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a := evss[0].wait(t, acme.EventIssued, "localhost", 60*time.Second)
	b := evss[1].wait(t, acme.EventIssued, "localhost", 60*time.Second)
	if a.Status.Serial != b.Status.Serial {
		t.Fatalf("serials %s and %s: both ordered", a.Status.Serial, b.Status.Serial)
	}
	if o := p.Orders(); o != 1 {
		t.Fatalf("%d orders, want 1", o)
	}
}

// TestHTTP01FailureFallsBackToTLSALPN: the HTTP-01 port answers wrong,
// the TLS port is served by the Manager: the first attempt (HTTP-01)
// fails, the retry uses TLS-ALPN-01 and succeeds.
func TestHTTP01FailureFallsBackToTLSALPN(t *testing.T) {
	t.Parallel()
	httpLn, tlsLn := listen(t), listen(t)
	serveHTTP(t, httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("wrong"))
	}))
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: portOf(httpLn), TLSPort: portOf(tlsLn)})
	evs := newEvents()
	cfg := acme.Config{Settings: acme.Settings{HTTPPort: portOf(httpLn)}, OnEvent: evs.on}
	acme.SetBackoff(&cfg, 100*time.Millisecond, time.Second)
	m := newManager(t, p, cfg)
	serveTLS(t, tlsLn, m.GetCertificate)
	ctx := context.Background()
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	failed := evs.wait(t, acme.EventFailed, "localhost", 60*time.Second)
	if !strings.Contains(failed.Err.Error(), "http-01") {
		t.Fatalf("first attempt failed with %v, want an http-01 validation error", failed.Err)
	}
	evs.wait(t, acme.EventIssued, "localhost", 60*time.Second)
	if o := p.Orders(); o != 2 {
		t.Fatalf("%d orders, want 2 (HTTP-01 failed, TLS-ALPN-01 succeeded)", o)
	}
}
