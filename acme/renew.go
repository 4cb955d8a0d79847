package acme

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/crypto/acme"
)

// run is e's worker: it sleeps until e.next (or a Renew), then does what
// is due: order a missing, expiring or forced certificate, or refresh
// its OCSP staple. One worker per name is what keeps orders for a name
// one at a time.
func (m *Manager) run(ctx context.Context, e *entry) {
	defer m.wg.Done()
	defer close(e.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		m.mu.Lock()
		next := e.next
		m.mu.Unlock()
		var timer <-chan time.Time
		if !next.IsZero() {
			t.Reset(max(time.Until(next), 0))
			timer = t.C
		}
		var req *renewReq
		select {
		case <-ctx.Done():
			return
		case <-timer:
		case r := <-e.force:
			req = &r
		}
		err := m.step(ctx, e, req != nil)
		if req != nil {
			req.done <- err
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// step does what is due for e; force comes from Renew.
func (m *Manager) step(ctx context.Context, e *entry, force bool) error {
	now := time.Now()
	have := e.cert.Load()
	due := have == nil || !now.Before(renewAt(have, e.set))
	ask := m.cfg.Provision != nil && !e.provisioned
	if !force && !ask && !e.revoked && !(due && (!m.cfg.DisableAutoRenew || have == nil)) {
		if due && have != nil && e.expiringSent != have.Leaf.SerialNumber.String() {
			e.expiringSent = have.Leaf.SerialNumber.String()
			m.emit(e, EventExpiring, nil)
		}
		if !e.ocspNext.IsZero() && !now.Before(e.ocspNext) && have != nil {
			m.refreshOCSP(ctx, e, have)
		}
		m.schedule(e, nil)
		return nil
	}

	m.mu.Lock()
	e.attempting = true
	m.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	c, src, err := m.obtain(actx, e, have, force || e.revoked)
	cancel()
	if err == nil && src == SourceACME && len(c.Leaf.OCSPServer) > 0 && c != have {
		c = m.stapled(ctx, e, c)
	}

	m.mu.Lock()
	e.attempting = false
	// Wake the handshakes waiting for this attempt, after the new
	// certificate is in place (they read it without the lock).
	defer func() {
		m.mu.Lock()
		close(e.waitCh)
		e.waitCh = make(chan struct{})
		m.mu.Unlock()
	}()
	if err != nil {
		if ctx.Err() == nil {
			e.lastErr = err.Error()
		}
		m.mu.Unlock()
		if ctx.Err() != nil {
			return err // stopping: not a failure of the CA
		}
		e.failures++
		m.schedule(e, err)
		m.emit(e, EventFailed, err)
		return err
	}
	e.failures = 0
	e.revoked = false
	e.lastErr = ""
	e.source = src
	if c != have {
		e.cert.Store(c)
	}
	m.mu.Unlock()
	m.schedule(e, nil)
	switch {
	case c == have:
	case have == nil:
		m.emit(e, EventIssued, nil)
	case have.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0:
		m.emit(e, EventRenewed, nil)
	}
	return nil
}

// renewAt is when c falls due under s: RenewBefore ahead of its
// expiry, or, for a certificate whose whole lifetime is shorter than
// RenewBefore (a short-lived profile), a third of its lifetime ahead, so
// that a fresh certificate is never due at once (which would re-order
// it in a loop).
func renewAt(c *tls.Certificate, s Settings) time.Time {
	before := s.RenewBefore
	if life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); before >= life {
		before = life / 3
	}
	return c.Leaf.NotAfter.Add(-before)
}

// schedule sets e.next after a step: the retry after a failure (err), or
// the next renewal check, whichever of that and the OCSP refresh is
// first.
func (m *Manager) schedule(e *entry, err error) {
	now := time.Now()
	var next time.Time
	if err != nil {
		next = now.Add(m.backoff(e.failures, err))
	} else if c := e.cert.Load(); c != nil && m.cfg.DisableAutoRenew {
		if e.expiringSent != c.Leaf.SerialNumber.String() {
			next = renewAt(c, e.set) // to report it expiring
		}
	} else if c != nil {
		// Wake at the next periodic check (±10%), or when the certificate
		// falls due plus up to a tenth of the time until then (at most
		// an hour), so that a fleet loaded together does not renew in
		// one burst.
		iv := m.cfg.RenewCheckInterval
		next = now.Add(iv - iv/10 + rand.N(iv/5+1))
		if until := time.Until(renewAt(c, e.set)); until <= 0 {
			// Due right after it was obtained (Provision returned an old
			// certificate): ask again on the backoff schedule, not at once.
			e.dueAgain++
			next = now.Add(m.backoff(e.dueAgain, nil))
		} else if until < time.Until(next) {
			e.dueAgain = 0
			next = now.Add(until + rand.N(min(until/10, time.Hour)+1))
		} else {
			e.dueAgain = 0
		}
	}
	if !e.ocspNext.IsZero() && (next.IsZero() || e.ocspNext.Before(next)) {
		next = e.ocspNext
	}
	if e.revoked && err == nil {
		next = now
	}
	m.mu.Lock()
	e.next = next
	if err != nil {
		e.lastErr = err.Error()
	}
	m.mu.Unlock()
}

// backoff is the wait before retry n (n ≥ 1) after err: exponential from
// the base to the cap with equal jitter, and never shorter than what
// the CA asked for (Retry-After, rate limits).
func (m *Manager) backoff(n int, err error) time.Duration {
	d := m.cfg.backoffCap
	if n < 30 {
		d = min(m.cfg.backoffBase<<(n-1), m.cfg.backoffCap)
	}
	d = d/2 + rand.N(d/2+1)
	if ra, limited := acme.RateLimit(err); limited {
		// A rate limit without Retry-After: wait long, the limits are
		// per hour or per week.
		d = max(d, ra, min(time.Hour, m.cfg.backoffCap))
	} else if ra := retryAfter(err); ra > d {
		d = ra
	}
	return min(d, 7*24*time.Hour)
}

// retryAfter returns the Retry-After an ACME error response carried.
func retryAfter(err error) time.Duration {
	var ae *acme.Error
	if !errors.As(err, &ae) || ae.Header == nil {
		return 0
	}
	return retryAfterHeader(ae.Header.Get("Retry-After"))
}

// retryAfterHeader parses a Retry-After value (seconds or HTTP date).
func retryAfterHeader(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// obtain gets e a certificate: from Provision first when there is one,
// else (or on ErrUseACME, or on an error with fallback) from the CA.
func (m *Manager) obtain(ctx context.Context, e *entry, have *tls.Certificate, force bool) (*tls.Certificate, Source, error) {
	if m.cfg.Provision != nil {
		e.provisioned = true
		c, err := m.cfg.Provision(ctx, e.name)
		switch {
		case err == nil:
			c, err = checkCert(c, e.name)
			if err != nil {
				return nil, "", err
			}
			return c, SourceCustom, nil
		case errors.Is(err, ErrUseACME):
		case m.cfg.NoProvisionFallback:
			return nil, "", err
		default:
			m.log.Warn("acme: Provision failed, ordering from the CA", "name", e.name, "err", err)
		}
	}
	c, err := m.order(ctx, e, have, force)
	return c, SourceACME, err
}

// requestRetry is the acme.Client's retry of one failed request (5xx,
// bad nonce): three quick tries. A rate limit, or a Retry-After over
// 10 s, is not waited out inside the attempt: the error goes up to the
// attempt backoff, which honours it without holding a request open.
func requestRetry(n int, _ *http.Request, res *http.Response) time.Duration {
	if n > 3 || res != nil && res.StatusCode == http.StatusTooManyRequests {
		return 0
	}
	d := time.Duration(n)*time.Second/2 + rand.N(time.Second/2)
	if res != nil {
		if ra := retryAfterHeader(res.Header.Get("Retry-After")); ra > 10*time.Second {
			return 0
		} else if ra > d {
			d = ra
		}
	}
	return d
}
