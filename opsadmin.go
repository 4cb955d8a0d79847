package smartproxy

import (
	"net"
	"time"

	"github.com/gosmartproxy/smartproxy/admin"
	"github.com/gosmartproxy/smartproxy/connection"
)

// AdminSource returns the proxy as the admin API's data source: pass it
// as admin.Config.Source (with Collector as admin.Config.Collector). Like
// Collector, it switches on per-request accounting of the HTTP layer, for
// the dashboard's request counts.
func (p *Proxy) AdminSource() admin.Source {
	p.ops.requests.Store(true)
	return adminSource{p}
}

// Ready reports whether the proxy is serving: Start opened its
// listeners and Stop has not begun.
func (p *Proxy) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started && !p.stopped
}

// adminSource implements admin.Source over a Proxy.
type adminSource struct{ p *Proxy }

func (a adminSource) Ready() bool { return a.p.Ready() }

func (a adminSource) Routes() []admin.Route {
	set := a.p.set.Load()
	out := make([]admin.Route, 0, len(set.routes))
	for _, r := range set.routes {
		ar := admin.Route{Name: r.Name, Domains: r.Match.Domains, Action: string(r.Action.Type), Priority: r.Priority}
		r.Match.Ports.Each(func(port int) bool {
			ar.Ports = append(ar.Ports, port)
			return len(ar.Ports) < 1000 // a port range lists its first thousand
		})
		if r.Action.TLS != nil {
			ar.TLS = string(r.Action.TLS.Mode)
		}
		for _, t := range r.Action.Targets {
			for _, h := range t.Host {
				ar.Targets = append(ar.Targets, net.JoinHostPort(h, t.Port.String()))
			}
			if t.HostFunc != nil {
				ar.Targets = append(ar.Targets, "(computed per connection)")
			}
		}
		out = append(out, ar)
	}
	return out
}

func (a adminSource) Connections() []admin.Connection {
	lister, ok := a.p.conns.(interface {
		Records() []connection.RecordInfo
	})
	if !ok {
		return nil
	}
	recs := lister.Records()
	out := make([]admin.Connection, len(recs))
	for i, r := range recs {
		out[i] = admin.Connection{ID: r.ID, Client: r.Client.String(), Port: r.LocalPort, Route: r.Route,
			Domain: r.Domain, Start: r.Start, LastActivity: r.LastActivity, BytesIn: r.BytesIn, BytesOut: r.BytesOut}
	}
	return out
}

func (a adminSource) Targets() []admin.Target {
	ts := targetStatsOf(a.p)
	out := make([]admin.Target, len(ts))
	for i, t := range ts {
		out[i] = admin.Target{Addr: t.Addr, Up: t.Up || !t.known, ActiveConnections: t.ActiveConnections,
			ConsecutiveFailures: t.ConsecutiveFailures, HealthChecked: t.HealthChecked,
			HealthCheckUp: t.HealthCheckUp, ConnectErrors: t.connectErrors}
		if !t.DownUntil.IsZero() {
			d := t.DownUntil
			out[i].DownUntil = &d
		}
	}
	return out
}

func (a adminSource) Stats() admin.Stats {
	p := a.p
	m := p.Metrics()
	s := admin.Stats{
		Time: time.Now(), Active: m.Active, Total: m.Total, BytesIn: m.BytesIn, BytesOut: m.BytesOut,
		Rejections: make(map[string]uint64, len(m.Rejected)),
		Throughput: admin.Throughput{
			In:  [3]float64{m.Throughput.In.Last1s, m.Throughput.In.Last10s, m.Throughput.In.Last60s},
			Out: [3]float64{m.Throughput.Out.Last1s, m.Throughput.Out.Last10s, m.Throughput.Out.Last60s},
		},
		Targets: a.Targets(),
		TLS:     admin.TLSStats{Full: p.ops.tls.full.Load(), Resumed: p.ops.tls.resumed.Load()},
	}
	for reason, n := range m.Rejected {
		s.Rejections[string(reason)] = n
	}
	for _, r := range routeStatsOf(p, m) {
		s.Routes = append(s.Routes, admin.RouteStats(r))
	}
	for _, c := range m.TopIPs {
		s.TopClients = append(s.TopClients, admin.Client{IP: c.IP, Active: c.Active})
	}
	for i := range p.ops.tls.failed {
		s.TLS.Failures += p.ops.tls.failed[i].Load()
	}
	s.Certificate = p.certificateStatus()
	return s
}
