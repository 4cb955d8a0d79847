package acme

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// State is where a managed name stands.
type State string

// States of a managed name.
const (
	// StateValid: a certificate is served and nothing is due or failing.
	StateValid State = "valid"
	// StatePending: no certificate yet; the first one is being ordered
	// (or will be once the Manager starts).
	StatePending State = "pending"
	// StateRenewing: a certificate is served while its successor is
	// being ordered.
	StateRenewing State = "renewing"
	// StateExpired: the only certificate there is has expired.
	StateExpired State = "expired"
	// StateError: the last attempt failed; NextAttempt says when the next
	// one runs, and a still valid certificate (NotAfter) is served.
	StateError State = "error"
)

// Source says where a certificate came from.
type Source string

// Sources of certificates.
const (
	// SourceStatic is for the proxy to report certificates it was given.
	SourceStatic Source = "static"
	SourceACME   Source = "acme"   // ordered from the ACME CA
	SourceCustom Source = "custom" // returned by Config.Provision
)

// CertStatus reports one managed name.
type CertStatus struct {
	Name   string
	State  State
	Source Source // "" until there is a certificate
	// Issuer is the common name (else the full name) of the issuer of
	// the served certificate; Serial its serial number in hex.
	Issuer, Serial      string
	NotBefore, NotAfter time.Time
	// LastError is the error of the last failed attempt, cleared by a
	// success.
	LastError string
	// NextAttempt is when the next order (or Provision call) for the
	// name runs: the retry after a failure, or the renewal time; zero
	// while an attempt runs or when nothing is scheduled.
	NextAttempt time.Time
}

// EventKind names an event.
type EventKind string

// Kinds of events.
const (
	EventIssued   EventKind = "issued"   // a name got its first certificate in this process
	EventRenewed  EventKind = "renewed"  // a certificate was replaced by a newer one
	EventFailed   EventKind = "failed"   // an attempt failed (Err); retried at Status.NextAttempt
	EventExpiring EventKind = "expiring" // a certificate fell due and is not being renewed (auto-renew off)
)

// Event is passed to Config.OnEvent.
type Event struct {
	Kind   EventKind
	Name   string
	Err    error // for EventFailed
	Status CertStatus
}

// String is a one-line description for logs.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Kind, e.Name)
	if e.Status.Serial != "" {
		fmt.Fprintf(&b, " serial=%s notAfter=%s", e.Status.Serial, e.Status.NotAfter.Format(time.RFC3339))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, " err=%v next=%s", e.Err, e.Status.NextAttempt.Format(time.RFC3339))
	}
	return b.String()
}

// fillCert copies the served certificate's facts into st.
func fillCert(st *CertStatus, leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	st.Issuer = leaf.Issuer.CommonName
	if st.Issuer == "" {
		st.Issuer = leaf.Issuer.String()
	}
	st.Serial = leaf.SerialNumber.Text(16)
	st.NotBefore, st.NotAfter = leaf.NotBefore, leaf.NotAfter
}

// Status reports every managed name, sorted by name.
func (m *Manager) Status() []CertStatus {
	m.mu.Lock()
	out := make([]CertStatus, 0, len(m.names))
	for _, e := range m.names {
		out = append(out, e.statusLocked(time.Now()))
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b CertStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// statusLocked builds e's status; m.mu is held.
func (e *entry) statusLocked(now time.Time) CertStatus {
	st := CertStatus{Name: e.name, LastError: e.lastErr, NextAttempt: e.next}
	if e.attempting {
		st.NextAttempt = time.Time{}
	}
	c := e.cert.Load()
	if c != nil {
		st.Source = e.source
		fillCert(&st, c.Leaf)
	}
	switch {
	case e.lastErr != "":
		st.State = StateError
	case c == nil:
		st.State = StatePending
	case e.attempting:
		st.State = StateRenewing
	case !now.Before(c.Leaf.NotAfter):
		st.State = StateExpired
	default:
		st.State = StateValid
	}
	return st
}

// emit sends an event for e to Config.OnEvent and the log.
func (m *Manager) emit(e *entry, kind EventKind, err error) {
	m.mu.Lock()
	st := e.statusLocked(time.Now())
	m.mu.Unlock()
	ev := Event{Kind: kind, Name: e.name, Err: err, Status: st}
	if kind == EventFailed {
		m.log.Warn("acme: certificate attempt failed", "name", e.name, "err", err, "next", st.NextAttempt)
	} else {
		m.log.Info("acme: certificate "+string(kind), "name", e.name, "serial", st.Serial, "notAfter", st.NotAfter, "source", st.Source)
	}
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(ev)
	}
}
