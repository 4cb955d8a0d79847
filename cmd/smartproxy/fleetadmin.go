package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/admin"
	"github.com/gosmartproxy/smartproxy/cluster"
)

// fleetSource is a fleet instance as the admin API sees it: the proxy,
// ready only while its etcd watcher is connected (an instance cut off
// from etcd keeps serving its last routes but says it may be stale).
type fleetSource struct {
	admin.Source
	w *cluster.Watcher
}

// Ready reports the proxy's readiness and the watcher's connection.
func (s fleetSource) Ready() bool { return s.Source.Ready() && s.w.Connected() }

// fleetCollector adds the instance's config revision and etcd
// connection to the proxy's metrics, so an operator can see which
// instances run the current configuration.
type fleetCollector struct {
	prometheus.Collector
	revision, connected prometheus.Collector
}

func newFleetCollector(p *smartproxy.Proxy, w *cluster.Watcher) fleetCollector {
	return fleetCollector{
		Collector: p.Collector(),
		revision: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "smartproxy_cluster_config_revision",
			Help: "etcd revision of the published configuration this instance runs.",
		}, func() float64 { return float64(w.Revision()) }),
		connected: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "smartproxy_cluster_connected",
			Help: "1 while this instance reaches etcd, 0 while it serves its last good configuration without it.",
		}, func() float64 {
			if w.Connected() {
				return 1
			}
			return 0
		}),
	}
}

// Describe implements prometheus.Collector.
func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	c.Collector.Describe(ch)
	c.revision.Describe(ch)
	c.connected.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	c.Collector.Collect(ch)
	c.revision.Collect(ch)
	c.connected.Collect(ch)
}

// startFleetAdmin serves the admin API of a fleet instance when the
// published config's admin block or -admin asks for it. POST /reload
// re-reads etcd, as SIGHUP does.
func startFleetAdmin(p *smartproxy.Proxy, cfg *smartproxy.Config, addr string, w *cluster.Watcher, log *slog.Logger) (stop func(), err error) {
	ac, err := adminConfig(cfg, addr)
	if err != nil || ac == nil {
		return func() {}, err
	}
	c := *ac
	c.Source = fleetSource{Source: p.AdminSource(), w: w}
	c.Collector = newFleetCollector(p, w)
	c.Reload = func(context.Context) error { w.Refresh(); return nil }
	return serveAdmin(c, log)
}

// serveAdmin starts the admin API as cfg says (with its Source,
// Collector and Reload set) and logs where it listens. stop closes it,
// cutting requests still running after 5 s (a scraper that stopped
// reading must not hold the process's exit).
func serveAdmin(cfg admin.Config, log *slog.Logger) (stop func(), err error) {
	cfg.Logger = log
	s, err := admin.Start(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	log.Info("admin API listening", "addr", s.Addr().String(), "token", cfg.Token != "")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	}, nil
}
