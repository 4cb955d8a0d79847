package smartproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Active health checks: one goroutine per distinct (target address,
// check config, TLS mode), shared by every route naming that combination,
// started by Start, re-synced by UpdateRoutes and stopped by Stop.

// maxCheckedPorts bounds the addresses a PreservePort target expands to
// (one per port of the route): a route over a wide range still gets its
// first ports checked, not tens of thousands of goroutines.
const maxCheckedPorts = 256

// checkTLSMode says how a checker speaks to its target.
type checkTLSMode uint8

const (
	checkPlain       checkTLSMode = iota
	checkReencrypt                // the route re-encrypts: verify as the route does
	checkPassthrough              // the backend terminates the client's TLS: HTTPS, unverified
)

// checkKey identifies a checker; routes with equal keys share it.
type checkKey struct {
	addr string
	cfg  healthCheckConfig
	tls  checkTLSMode
}

// healthChecker probes one target until its context ends.
type healthChecker struct {
	key     checkKey
	h       *targetHealth
	tlsConf *tls.Config // for the TLS modes
	cancel  context.CancelFunc
	done    chan struct{}

	// Owned by the run goroutine.
	up         bool
	fails, oks int
}

// syncHealth makes the running checkers those set's routes need and pins
// set's fixed target addresses in the registry; checkers no longer needed
// are stopped (and waited for) before it returns. Called by Start and
// UpdateRoutes with p.mu held, so never concurrently with itself or with
// stopHealth.
func (p *Proxy) syncHealth(set *routeSet) {
	reg := p.health
	want := make(map[checkKey]*tls.Config)
	pins := make(map[string]bool)
	for _, r := range set.routes {
		st := r.state
		if r.Action.Type != ActionForward || len(st.targets) == 0 {
			continue
		}
		mode, rt := checkPlain, st.tls
		switch {
		case rt != nil && rt.mode == TLSTerminateAndReencrypt:
			mode = checkReencrypt
		case r.Action.TLS != nil && r.Action.TLS.Mode == TLSPassthrough:
			mode = checkPassthrough
		}
		fixedAddrs(r, func(host, addr string) {
			pins[addr] = true
			if st.lb == nil || st.lb.check == nil {
				return
			}
			k := checkKey{addr: addr, cfg: *st.lb.check, tls: mode}
			if _, ok := want[k]; ok {
				return
			}
			switch mode {
			case checkReencrypt:
				want[k] = rt.backendConfig(host, "")
			case checkPassthrough:
				// The proxy never sees inside passthrough TLS; verifying the
				// backend is the client's business, the check only asks
				// whether it answers.
				want[k] = &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
			default:
				want[k] = nil
			}
		})
	}

	var stopping []*healthChecker
	for k, c := range reg.checkers {
		if _, ok := want[k]; !ok {
			c.cancel()
			stopping = append(stopping, c)
			delete(reg.checkers, k)
		}
	}
	for _, c := range stopping {
		<-c.done
	}

	now := time.Now().UnixNano()
	reg.mu.Lock()
	for _, c := range stopping {
		c.h.checkers--
	}
	for _, h := range reg.m {
		h.pinned = pins[h.addr]
		// A failing address no route names any more, long past its
		// backoff, would otherwise stay forever.
		if du := h.downUntil.Load(); du != 0 && now-du > int64(reg.backoffMax) && !h.pinned && h.checkers == 0 && h.active.Load() == 0 {
			h.failures.Store(0)
			h.downUntil.Store(0)
		}
		reg.pruneLocked(h)
	}
	for addr := range pins {
		reg.getLocked(addr).pinned = true
	}
	var starting []*healthChecker
	for k, tc := range want {
		if _, ok := reg.checkers[k]; ok {
			continue
		}
		h := reg.getLocked(k.addr)
		h.checkers++
		ctx, cancel := context.WithCancel(context.Background())
		c := &healthChecker{key: k, h: h, tlsConf: tc, cancel: cancel, done: make(chan struct{}), up: true}
		reg.checkers[k] = c
		starting = append(starting, c)
		go c.run(ctx, p)
	}
	reg.mu.Unlock()
	for _, c := range starting {
		p.log.Debug("health check started", "target", c.key.addr, "path", c.key.cfg.path, "interval", c.key.cfg.interval)
	}
}

// stopHealth stops every checker and waits for them: promptly, as a
// cancelled probe closes its conn. Called by Stop with p.mu held.
func (p *Proxy) stopHealth() {
	reg := p.health
	for _, c := range reg.checkers {
		c.cancel()
	}
	for k, c := range reg.checkers {
		<-c.done
		delete(reg.checkers, k)
	}
}

// fixedAddrs calls fn with every address a forward route's first target
// resolves to without a connection at hand: each host with its fixed port,
// or with each of the route's ports (at most maxCheckedPorts) for
// PreservePort. HostFunc and PortFunc targets have none.
func fixedAddrs(r *Route, fn func(host, addr string)) {
	t := &r.state.targets[0]
	if t.HostFunc != nil || t.PortFunc != nil {
		return
	}
	if t.Port != PreservePort {
		port := strconv.Itoa(int(t.Port))
		for _, h := range t.Host {
			fn(h, net.JoinHostPort(h, port))
		}
		return
	}
	n := 0
	r.Match.Ports.Each(func(port int) bool {
		for _, h := range t.Host {
			fn(h, net.JoinHostPort(h, strconv.Itoa(port)))
		}
		n++
		return n < maxCheckedPorts
	})
}

// run probes at the configured interval until ctx ends. The first probe
// runs at once, so a target that is down when the proxy starts is found
// within unhealthyThreshold probes.
func (c *healthChecker) run(ctx context.Context, p *Proxy) {
	defer close(c.done)
	defer func() {
		if !c.up { // withdraw this checker's verdict along with it
			c.h.downVotes.Add(-1)
		}
	}()
	t := time.NewTicker(c.key.cfg.interval)
	defer t.Stop()
	for {
		err := c.probe(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if c.record(err == nil) {
			if c.up {
				p.log.Info("target up: health check passes again", "target", c.key.addr, "path", c.key.cfg.path)
			} else {
				p.log.Warn("target down: health check fails", "target", c.key.addr, "path", c.key.cfg.path, "err", err)
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
// down after unhealthy consecutive failures, up again after healthy
// consecutive successes.
func (c *healthChecker) record(ok bool) (flipped bool) {
	cfg := &c.key.cfg
	if ok {
		c.fails = 0
		if c.up {
			return false
		}
		if c.oks++; c.oks < cfg.healthy {
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
	if c.fails++; c.fails < cfg.unhealthy {
		return false
	}
	c.up, c.fails = false, 0
	c.h.downVotes.Add(1)
	return true
}

// probe checks the target once within the configured timeout: a TCP
// connect, or an HTTP GET of the path answered with 2xx or 3xx.
func (c *healthChecker) probe(ctx context.Context, p *Proxy) error {
	cfg := &c.key.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	conn, err := p.dial(ctx, c.key.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if cfg.path == "" {
		return nil
	}
	// Closing the conn when ctx ends unblocks any read or write at once,
	// so Stop and UpdateRoutes never wait for a slow target.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if c.tlsConf != nil {
		tc := tls.Client(conn, c.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	req := "GET " + cfg.path + " HTTP/1.1\r\nHost: " + c.key.addr +
		"\r\nUser-Agent: smartproxy-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: status %d", cfg.path, resp.StatusCode)
	}
	return nil
}

// activeCheckers counts running checkers (tests).
func (p *Proxy) activeCheckers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.health.checkers)
}
