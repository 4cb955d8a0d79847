package connection

import (
	"testing"
	"time"
)

// TestKilledBy: a record the manager closed reports why (inactivity,
// lifetime, shutdown), one its owner closed reports "": the close
// reason of access logs.
func TestKilledBy(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{InactivityTimeout: time.Minute, MaxLifetime: time.Hour, Now: clk.Now})
	idle := mustOpen(t, m, v4(1))
	old := mustOpen(t, m, v4(2))
	late := mustOpen(t, m, v4(4))

	clk.Advance(50 * time.Second)
	for _, r := range []*Record{old, late} {
		r.Touch()
	}
	clk.Advance(20 * time.Second) // idle is past InactivityTimeout
	m.sweep()
	for _, r := range []*Record{old, late} {
		if got := r.KilledBy(); got != "" {
			t.Fatalf("a live record reports KilledBy %q", got)
		}
	}
	if got := idle.KilledBy(); got != ReasonInactivity {
		t.Errorf("idle: KilledBy = %q, want %q", got, ReasonInactivity)
	}
	for range 61 { // past MaxLifetime, kept active
		clk.Advance(time.Minute - time.Second)
		for _, r := range []*Record{old, late} {
			r.Touch()
		}
	}
	m.Close(late)
	m.sweep()
	if got := old.KilledBy(); got != ReasonLifetime {
		t.Errorf("old: KilledBy = %q, want %q", got, ReasonLifetime)
	}
	if got := late.KilledBy(); got != "" {
		t.Errorf("closed by its owner before the sweep: KilledBy = %q, want \"\"", got)
	}
	owned := mustOpen(t, m, v4(3)) // open at Stop
	m.CloseAll()
	if got := owned.KilledBy(); got != ReasonShutdown {
		t.Errorf("owned: KilledBy = %q, want %q", got, ReasonShutdown)
	}
	for _, r := range []*Record{idle, old, owned} {
		m.Close(r)
	}
}
