package acme_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// TestRenewalKeepsConnections: certificates live one hour and are due
// with under 3599 s left, so the renewal loop renews a second or two
// after issuance. A client holding a connection across the swap keeps
// it; new handshakes get the new serial.
func TestRenewalKeepsConnections(t *testing.T) {
	t.Parallel()
	tlsLn := listen(t)
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true, ValidityPeriod: time.Hour})
	evs := newEvents()
	m := newManager(t, p, acme.Config{
		Settings:           acme.Settings{RenewBefore: time.Hour - 2*time.Second},
		RenewCheckInterval: 200 * time.Millisecond,
		OnEvent:            evs.on,
	})
	serveTLS(t, tlsLn, m.GetCertificate)
	ctx := context.Background()
	issued := manageStart(t, m, evs)
	roots := p.Roots(t)
	held, err := dialTLS(t, tlsLn.Addr().String(), "localhost", roots)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if serialOf(t, held) != issued.Status.Serial {
		t.Fatalf("served %s, issued %s", serialOf(t, held), issued.Status.Serial)
	}
	echo(t, held, "before")

	renewed := evs.wait(t, acme.EventRenewed, "localhost", 60*time.Second)
	if renewed.Status.Serial == issued.Status.Serial {
		t.Fatal("renewed event with the old serial")
	}
	echo(t, held, "after") // the connection made before the swap lives on
	fresh, err := dialTLS(t, tlsLn.Addr().String(), "localhost", roots)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if s := serialOf(t, fresh); s == issued.Status.Serial {
		t.Fatalf("new handshake got the old serial %s", s)
	}

	// Forced renewal through Renew gives yet another certificate.
	before := status(t, m, "localhost").Serial
	if err := m.Renew(ctx, "localhost"); err != nil {
		t.Fatal(err)
	}
	if after := status(t, m, "localhost").Serial; after == before {
		t.Fatalf("Renew kept serial %s", after)
	}
}

func echo(t *testing.T, c *tls.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Fatalf("write on held connection: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != msg+"\n" {
		t.Fatalf("echo on held connection: %q %v", line, err)
	}
}

// TestAutoRenewOff: with DisableAutoRenew a due certificate is reported
// expiring and not renewed.
func TestAutoRenewOff(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true, ValidityPeriod: time.Hour})
	evs := newEvents()
	m := newManager(t, p, acme.Config{
		Settings:           acme.Settings{RenewBefore: time.Hour - 3*time.Second}, // Pebble: life 3599 s
		RenewCheckInterval: 100 * time.Millisecond,
		DisableAutoRenew:   true,
		OnEvent:            evs.on,
	})
	manageStart(t, m, evs)
	evs.wait(t, acme.EventExpiring, "localhost", 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	if o := p.Orders(); o != 1 {
		t.Fatalf("%d orders with auto-renew off, want 1", o)
	}
}

// TestProvision: the hook's certificate is served as "custom" with no
// order; ErrUseACME and (with fallback) an error order from the CA;
// without fallback an error marks the name failed and orders nothing.
func TestProvision(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	custom := selfSigned(t, 90*24*time.Hour, "custom.test")
	provision := func(_ context.Context, name string) (*tls.Certificate, error) {
		switch name {
		case "custom.test":
			return custom, nil
		case "localhost":
			return nil, acme.ErrUseACME
		}
		return nil, errTest
	}
	ctx := context.Background()

	evs := newEvents()
	m := newManager(t, p, acme.Config{Provision: provision, OnEvent: evs.on})
	if err := m.Manage(ctx, []acme.Domain{{Name: "custom.test"}, {Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	evs.wait(t, acme.EventIssued, "custom.test", 30*time.Second)
	evs.wait(t, acme.EventIssued, "localhost", 60*time.Second)
	if st := status(t, m, "custom.test"); st.Source != acme.SourceCustom || st.State != acme.StateValid {
		t.Fatalf("custom.test: %+v", st)
	}
	if st := status(t, m, "localhost"); st.Source != acme.SourceACME || st.State != acme.StateValid {
		t.Fatalf("localhost: %+v", st)
	}
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "custom.test"})
	if err != nil || c.Leaf == nil || c.Leaf.DNSNames[0] != "custom.test" {
		t.Fatalf("custom.test served %v %v", c, err)
	}
	if o := p.Orders(); o != 1 {
		t.Fatalf("%d orders, want 1 (localhost only)", o)
	}

	// A failing hook: with fallback (default) the name is ordered…
	p2 := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	failing := func(context.Context, string) (*tls.Certificate, error) { return nil, errTest }
	evs2 := newEvents()
	m2 := newManager(t, p2, acme.Config{Provision: failing, OnEvent: evs2.on})
	if err := m2.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	evs2.wait(t, acme.EventIssued, "localhost", 60*time.Second)
	if st := status(t, m2, "localhost"); st.Source != acme.SourceACME {
		t.Fatalf("fallback: %+v", st)
	}

	// …and without fallback it fails, with no order.
	p3 := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	evs3 := newEvents()
	fallback := selfSigned(t, time.Hour, "fallback.invalid")
	m3 := newManager(t, p3, acme.Config{Provision: failing, NoProvisionFallback: true, OnEvent: evs3.on, Fallback: fallback})
	if err := m3.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if err := m3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ev := evs3.wait(t, acme.EventFailed, "localhost", 30*time.Second)
	if !errors.Is(ev.Err, errTest) || ev.Status.State != acme.StateError {
		t.Fatalf("no-fallback failure: %+v", ev)
	}
	if c, err := m3.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"}); err != nil || c != fallback {
		t.Fatalf("failed name served %v %v, want the Fallback certificate", c, err)
	}
	if o := p3.Orders(); o != 0 {
		t.Fatalf("%d orders without fallback, want 0", o)
	}
}

// TestShortLivedNotReordered: certificates that live 30 s, shorter than
// RenewBefore (30 days by default), are renewed a third of their life
// before expiry, not re-ordered in a loop as soon as they arrive.
func TestShortLivedNotReordered(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true, ValidityPeriod: 30 * time.Second})
	evs := newEvents()
	m := newManager(t, p, acme.Config{RenewCheckInterval: time.Hour, OnEvent: evs.on})
	manageStart(t, m, evs)
	time.Sleep(time.Second)
	if o := p.Orders(); o != 1 {
		t.Fatalf("%d orders within 1 s of a 30 s certificate, want 1", o)
	}
	st := status(t, m, "localhost")
	life := st.NotAfter.Sub(st.NotBefore)
	if due := st.NotAfter.Add(-life / 3); st.NextAttempt.Before(due) || st.NextAttempt.After(st.NotAfter) {
		t.Fatalf("next attempt %v, want between %v (a third of the life before expiry) and %v", st.NextAttempt, due, st.NotAfter)
	}
}

// TestProvisionDueCertificateNotLooped: a hook that keeps returning a
// certificate already inside the renewal window is asked again on the
// backoff schedule, not in a loop.
func TestProvisionDueCertificateNotLooped(t *testing.T) {
	t.Parallel()
	// A year-long certificate with a day left: inside RenewBefore (30 days).
	cert := selfSignedWindow(t, time.Now().Add(-364*24*time.Hour), time.Now().Add(24*time.Hour), "old.example")
	var calls atomic.Int32
	cfg := acme.Config{
		Storage: acme.NewFileStorage(t.TempDir()),
		Logger:  slog.New(slog.DiscardHandler),
		Provision: func(context.Context, string) (*tls.Certificate, error) {
			calls.Add(1)
			return cert, nil
		},
	}
	acme.SetBackoff(&cfg, 200*time.Millisecond, time.Second)
	m, err := acme.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer m.Stop(ctx)
	if err := m.Manage(ctx, []acme.Domain{{Name: "old.example"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := calls.Load(); n < 2 || n > 8 {
		t.Fatalf("Provision called %d times in 1.5 s, want a backoff schedule", n)
	}
}
