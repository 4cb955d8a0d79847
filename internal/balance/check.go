package balance

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Active health checks: one goroutine per distinct CheckKey, shared by
// every route asking for it, made running by Sync and stopped by Stop.

// Health-check defaults, as in the TS library.
const (
	DefaultCheckInterval  = 10 * time.Second
	DefaultCheckTimeout   = 2 * time.Second
	DefaultUnhealthyAfter = 3
	DefaultHealthyAfter   = 2
)

// CheckConfig is how one active health check probes its address. It is
// comparable: checks with equal configs on one address share a checker.
type CheckConfig struct {
	// Path, when set, makes the probe an HTTP GET of it, which passes with
	// a 2xx or 3xx answer; empty: a TCP connect.
	Path string
	// Interval is the time between probes; Timeout bounds one probe.
	Interval, Timeout time.Duration
	// UnhealthyAfter consecutive failed probes take the address out;
	// HealthyAfter consecutive passing ones put it back.
	UnhealthyAfter, HealthyAfter int
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c CheckConfig) WithDefaults() CheckConfig {
	c.Interval = cmp.Or(c.Interval, DefaultCheckInterval)
	c.Timeout = cmp.Or(c.Timeout, DefaultCheckTimeout)
	c.UnhealthyAfter = cmp.Or(c.UnhealthyAfter, DefaultUnhealthyAfter)
	c.HealthyAfter = cmp.Or(c.HealthyAfter, DefaultHealthyAfter)
	return c
}

// CheckTLS says how a checker speaks to its address.
type CheckTLS uint8

const (
	// CheckPlain speaks TCP, or cleartext HTTP.
	CheckPlain CheckTLS = iota
	// CheckReencrypt speaks TLS verified as the route re-encrypting to the
	// address verifies it.
	CheckReencrypt
	// CheckPassthrough speaks TLS to a backend that terminates its
	// clients' TLS itself, without verifying it.
	CheckPassthrough
)

// CheckKey identifies a checker; requests with equal keys share one.
type CheckKey struct {
	Addr   string
	Config CheckConfig
	TLS    CheckTLS
}

// Plan is what Sync makes current: the addresses the running routes name
// and the checks they ask for. The zero Plan asks for nothing.
type Plan struct {
	pinned map[string]bool
	checks map[CheckKey]*tls.Config
}

// Pin keeps addr listed by Status while it is idle and healthy.
func (p *Plan) Pin(addr string) {
	if p.pinned == nil {
		p.pinned = make(map[string]bool)
	}
	p.pinned[addr] = true
}

// Check asks for the check k. tlsConfig gives the TLS config for the TLS
// modes (nil for CheckPlain); it is called for the first request of each
// key only, since routes sharing a check share its config too.
func (p *Plan) Check(k CheckKey, tlsConfig func() *tls.Config) {
	if _, ok := p.checks[k]; ok {
		return
	}
	if p.checks == nil {
		p.checks = make(map[CheckKey]*tls.Config)
	}
	p.checks[k] = tlsConfig()
}

// checker probes one address until its context ends.
type checker struct {
	key     CheckKey
	reg     *Health
	h       *addrHealth
	tlsConf *tls.Config // for the TLS modes
	cancel  context.CancelFunc
	done    chan struct{}

	// Owned by the run goroutine.
	up         bool
	fails, oks int
}

// Sync makes the running checkers those plan asks for and the pinned
// addresses plan's; checkers no longer asked for are stopped (and waited
// for, which is prompt: their probes are cancelled) before it returns.
func (r *Health) Sync(plan *Plan) {
	r.checkMu.Lock()
	defer r.checkMu.Unlock()
	var stopping []*checker
	for k, c := range r.checkers {
		if _, ok := plan.checks[k]; !ok {
			c.cancel()
			stopping = append(stopping, c)
			delete(r.checkers, k)
		}
	}
	for _, c := range stopping {
		<-c.done
	}

	now := time.Now().UnixNano()
	r.mu.Lock()
	for _, c := range stopping {
		c.h.checkers--
	}
	for _, h := range r.m {
		h.pinned = plan.pinned[h.addr]
		// A failing address no route names any more, long past its
		// backoff, would otherwise stay forever.
		if du := h.downUntil.Load(); du != 0 && now-du > int64(r.BackoffMax) && !h.pinned && h.checkers == 0 && h.active.Load() == 0 {
			if h.failures.Swap(0) > 0 {
				r.failing.Add(-1)
			}
			h.downUntil.Store(0)
		}
		r.pruneLocked(h)
	}
	for addr := range plan.pinned {
		r.getLocked(addr).pinned = true
	}
	var starting []*checker
	for k, tc := range plan.checks {
		if _, ok := r.checkers[k]; ok {
			continue
		}
		h := r.getLocked(k.Addr)
		h.checkers++
		ctx, cancel := context.WithCancel(context.Background())
		c := &checker{key: k, reg: r, h: h, tlsConf: tc, cancel: cancel, done: make(chan struct{}), up: true}
		r.checkers[k] = c
		starting = append(starting, c)
		go c.run(ctx)
	}
	r.mu.Unlock()
	for _, c := range starting {
		r.log.Debug("health check started", "target", c.key.Addr, "path", c.key.Config.Path, "interval", c.key.Config.Interval)
	}
}

// Stop stops every checker and waits for them: promptly, as a cancelled
// probe closes its conn.
func (r *Health) Stop() {
	r.checkMu.Lock()
	defer r.checkMu.Unlock()
	for _, c := range r.checkers {
		c.cancel()
	}
	for k, c := range r.checkers {
		<-c.done
		delete(r.checkers, k)
	}
}

// Checkers counts the running checkers.
func (r *Health) Checkers() int {
	r.checkMu.Lock()
	defer r.checkMu.Unlock()
	return len(r.checkers)
}

// run probes at the configured interval until ctx ends. The first probe
// runs at once, so an address that is down when the checker starts is
// found within UnhealthyAfter probes.
func (c *checker) run(ctx context.Context) {
	defer close(c.done)
	defer func() {
		if !c.up { // withdraw this checker's verdict along with it
			c.h.downVotes.Add(-1)
		}
	}()
	t := time.NewTicker(c.key.Config.Interval)
	defer t.Stop()
	for {
		err := c.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if c.record(err == nil) {
			if c.up {
				c.reg.log.Info("target up: health check passes again", "target", c.key.Addr, "path", c.key.Config.Path)
			} else {
				c.reg.log.Warn("target down: health check fails", "target", c.key.Addr, "path", c.key.Config.Path, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record counts one probe result and reports whether the verdict flipped:
// down after UnhealthyAfter consecutive failures, up again after
// HealthyAfter consecutive successes.
func (c *checker) record(ok bool) (flipped bool) {
	cfg := &c.key.Config
	if ok {
		c.fails = 0
		if c.up {
			return false
		}
		if c.oks++; c.oks < cfg.HealthyAfter {
			return false
		}
		c.up, c.oks = true, 0
		c.h.downVotes.Add(-1)
		return true
	}
	c.oks = 0
	if !c.up {
		return false
	}
	if c.fails++; c.fails < cfg.UnhealthyAfter {
		return false
	}
	c.up, c.fails = false, 0
	c.h.downVotes.Add(1)
	return true
}

// probe checks the address once within the configured timeout: a TCP
// connect, or an HTTP GET of the path answered with 2xx or 3xx.
func (c *checker) probe(ctx context.Context) error {
	cfg := &c.key.Config
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := c.reg.dial(ctx, c.key.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if cfg.Path == "" {
		return nil
	}
	// Closing the conn when ctx ends unblocks any read or write at once,
	// so Stop and Sync never wait for a slow target.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if c.tlsConf != nil {
		tc := tls.Client(conn, c.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	req := "GET " + cfg.Path + " HTTP/1.1\r\nHost: " + c.key.Addr +
		"\r\nUser-Agent: smartproxy-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fmt.Errorf("sending GET %s: %w", cfg.Path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("reading the answer to GET %s: %w", cfg.Path, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: status %d", cfg.Path, resp.StatusCode)
	}
	return nil
}
