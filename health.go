package smartproxy

import (
	"crypto/tls"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/balance"
)

// Health of backend targets lives in the proxy's balance.Health registry,
// shared by every route and connection: passive state from connect
// results, active checkers, and the count of connections in flight. This
// file reports it and tells the registry what the running routes ask for.

// TargetStatus is the health of one backend target address, as reported
// by [Proxy.TargetHealth].
type TargetStatus struct {
	// Addr is the target's "host:port".
	Addr string
	// Up reports whether new connections may go to the target: it is not
	// in a connect-failure backoff and no active health check sees it down.
	Up bool
	// ActiveConnections counts the connections (TCP) and requests (HTTP)
	// currently forwarded to the target, including those still connecting.
	ActiveConnections int64
	// ConsecutiveFailures counts failed connects since the last success.
	ConsecutiveFailures int
	// DownUntil is when the current connect-failure backoff ends; the zero
	// time when there is none. After it the target is tried again, and a
	// successful connect resets the backoff.
	DownUntil time.Time
	// HealthChecked reports whether an active health check probes the
	// target; HealthCheckUp is that check's verdict (true when unchecked).
	HealthChecked bool
	HealthCheckUp bool
}

// TargetHealth returns the health of every target the proxy knows of,
// sorted by address: the fixed addresses of the running routes' targets,
// and any other address with connections in flight or failing connects.
func (p *Proxy) TargetHealth() []TargetStatus {
	st := p.health.Status()
	out := make([]TargetStatus, len(st))
	for i, s := range st {
		out[i] = TargetStatus(s) // same fields: the conversion keeps them in step
	}
	return out
}

// healthPlan is what set's routes ask of the health registry: their fixed
// target addresses, kept listed by TargetHealth, and their active checks.
func healthPlan(set *routeSet) *balance.Plan {
	plan := new(balance.Plan)
	for _, r := range set.routes {
		st := r.state
		if r.Action.Type != ActionForward || len(st.targets) == 0 {
			continue
		}
		mode, rt := balance.CheckPlain, st.tls
		switch {
		case rt != nil && rt.mode == TLSTerminateAndReencrypt:
			mode = balance.CheckReencrypt
		case r.Action.TLS != nil && r.Action.TLS.Mode == TLSPassthrough:
			mode = balance.CheckPassthrough
		}
		fixedAddrs(r, func(host, addr string) {
			plan.Pin(addr)
			if st.lb.check == nil {
				return
			}
			plan.Check(balance.CheckKey{Addr: addr, Config: *st.lb.check, TLS: mode}, func() *tls.Config {
				switch mode {
				case balance.CheckReencrypt:
					return rt.backendConfig(host, "")
				case balance.CheckPassthrough:
					// The proxy never sees inside passthrough TLS; verifying
					// the backend is the client's business, the check only
					// asks whether it answers.
					return &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
				}
				return nil
			})
		})
	}
	return plan
}

// fixedAddrs calls fn with every address a forward route's first target
// resolves to without a connection at hand, as compileLB precomputed them:
// each host with its fixed port, or with each of the route's first
// maxPreservedPorts ports for PreservePort. HostFunc and PortFunc targets
// have none.
func fixedAddrs(r *Route, fn func(host, addr string)) {
	t, known := &r.state.targets[0], &r.state.lb.addrs[0]
	each := func(addrs []string) {
		for i, h := range t.Host {
			fn(h, addrs[i])
		}
	}
	if known.fixed != nil {
		each(known.fixed)
		return
	}
	if known.byPort == nil {
		return
	}
	n := 0
	r.Match.Ports.Each(func(port int) bool {
		if addrs, ok := known.byPort[port]; ok {
			each(addrs)
			n++
		}
		return n < maxPreservedPorts
	})
}
