package main

// A fleet: several instances run one configuration published to etcd
// (package cluster). Flags:
//
//	-publish FILE -etcd URLS -cluster-prefix P   validate FILE, then store it as <P>/config
//	-etcd URLS -cluster-prefix P                 run an instance from <P>/config, following changes
//	-etcd-cert, -etcd-key, -etcd-ca              TLS client settings for https endpoints
//	-listen ADDR                                 bind every route port on ADDR (overrides listenAddress)

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/cluster"
)

// fleetFlags are the command's fleet flags.
type fleetFlags struct {
	etcd, cert, key, ca, prefix, publish, listen string
}

func addFleetFlags(fs *flag.FlagSet) *fleetFlags {
	f := &fleetFlags{}
	fs.StringVar(&f.etcd, "etcd", "", "etcd client URLs, comma-separated: run as an instance of a fleet, reading the config from etcd")
	fs.StringVar(&f.prefix, "cluster-prefix", "", "etcd key prefix of the fleet, for example /smartproxy/prod")
	fs.StringVar(&f.cert, "etcd-cert", "", "client certificate (PEM) for https etcd endpoints")
	fs.StringVar(&f.key, "etcd-key", "", "key of the -etcd-cert certificate (PEM)")
	fs.StringVar(&f.ca, "etcd-ca", "", "CA certificate (PEM) of the etcd members (default: system roots)")
	fs.StringVar(&f.publish, "publish", "", "validate this config file and publish it to the fleet (needs -etcd and -cluster-prefix)")
	fs.StringVar(&f.listen, "listen", "", "bind every route port on this address, overriding the config's listenAddress")
	return f
}

// instance reports whether this run is an instance of a fleet.
func (f *fleetFlags) instance() bool { return f.etcd != "" && f.publish == "" }

// usage refuses combinations that make no sense, and makes -publish's
// file the file to load, so that it is read and validated as -check does.
func (f *fleetFlags) usage(configPath *string, check bool, stderr io.Writer) int {
	bad := func(msg string) int {
		fmt.Fprintf(stderr, "smartproxy: %s\n", msg)
		return 2
	}
	switch {
	case f.publish != "" && *configPath != "":
		return bad("give -publish FILE or -config FILE, not both")
	case f.publish != "" && (check || f.listen != ""):
		return bad("-publish validates and writes the file: drop -check and -listen")
	case f.publish != "" && (f.etcd == "" || f.prefix == ""):
		return bad("-publish needs -etcd and -cluster-prefix")
	case f.etcd != "" && *configPath != "":
		return bad("an instance of a fleet reads its config from etcd: drop -config (publish the file with -publish)")
	case f.etcd != "" && check:
		return bad("-check validates a file: smartproxy -check -config FILE")
	case f.etcd != "" && f.prefix == "":
		return bad("-etcd needs -cluster-prefix")
	case f.etcd == "" && (f.prefix != "" || f.cert != "" || f.key != "" || f.ca != ""):
		return bad("-cluster-prefix, -etcd-cert, -etcd-key and -etcd-ca need -etcd")
	}
	if _, _, err := net.SplitHostPort(f.listen); err == nil {
		return bad("-listen takes an address without a port: every route's port is bound on it")
	}
	if f.publish != "" {
		*configPath = f.publish
	}
	return 0
}

// override applies -listen.
func (f *fleetFlags) override(o *smartproxy.Options) {
	if f.listen != "" {
		o.ListenAddress = f.listen
	}
}

func (f *fleetFlags) dial(log *slog.Logger) (*cluster.Client, error) {
	cfg := cluster.Config{Prefix: f.prefix, Logger: log}
	for e := range strings.SplitSeq(f.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.Endpoints = append(cfg.Endpoints, e)
		}
	}
	if f.cert != "" || f.key != "" || f.ca != "" {
		t, err := cluster.TLSConfig(f.cert, f.key, f.ca)
		if err != nil {
			return nil, err
		}
		cfg.TLS = t
	}
	return cluster.Dial(cfg)
}

// publishFile stores the -publish file, already loaded and validated,
// as JSON text; what is stored is validated once more as the instances
// will read it. Nothing is written unless all of it is valid.
func (f *fleetFlags) publishFile(format smartproxy.ConfigFormat, log *slog.Logger, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "smartproxy: %s: %v\n", f.publish, err)
		return 1
	}
	data, err := os.ReadFile(f.publish) // LoadConfigFormat checked its kind and size
	if err != nil {
		return fail(err)
	}
	doc, err := jsonText(data, f.publish, format)
	if err != nil {
		return fail(err)
	}
	cfg, err := smartproxy.ParseConfig(doc, smartproxy.FormatJSON)
	if err != nil {
		return fail(err)
	}
	if rel := cfg.RelativePaths(); len(rel) > 0 {
		return fail(fmt.Errorf("relative paths (every instance would read them from its own working directory; give absolute paths): %s", strings.Join(rel, ", ")))
	}
	opts := cfg.Options()
	opts.Logger = log
	if !validate(cfg, opts, f.publish, stderr) {
		return 1
	}
	c, err := f.dial(log)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	rev, err := c.Publish(context.Background(), doc)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "%s: published to %s as revision %d (%d routes)\n", f.publish, c.ConfigKey(), rev, len(cfg.Routes))
	return 0
}

// jsonText is the stored form of a config file: a JSON file as it is, a
// YAML file converted (anchors and merge keys resolved).
func jsonText(data []byte, path string, format smartproxy.ConfigFormat) ([]byte, error) {
	if format == "" && strings.EqualFold(filepath.Ext(path), ".json") || format == smartproxy.FormatJSON {
		return data, nil
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("cannot be stored as JSON: %w", err)
	}
	return out, nil
}

// serve runs an instance of a fleet: it waits for a valid published
// config, starts with it, and applies every later version until SIGINT
// or SIGTERM (SIGHUP re-reads etcd at once).
func (f *fleetFlags) serve(log *slog.Logger, adminAddr string, ready chan<- *smartproxy.Proxy) int {
	c, err := f.dial(log)
	if err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	defer c.Close()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	p, cfg, doc, ok := f.firstProxy(c, log, sigs)
	if !ok {
		return 0
	}
	if err := p.Start(context.Background()); err != nil {
		_ = p.Stop(context.Background())
		log.Error("exiting", "err", err)
		return 1
	}
	log.Info("smartproxy started", "config", c.ConfigKey(), "revision", doc.Revision, "routes", len(cfg.Routes), "ports", p.Ports())
	settings := settingsOf(cfg)
	// For the admin API and metrics: readiness is w.Connected(), the
	// running config version w.Revision(), a refused one w.LastError().
	w := c.NewWatcher(doc.Revision, func(d cluster.Document) error { return applyDocument(p, d, settings, log) })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	stopAdmin, err := startFleetAdmin(p, cfg, adminAddr, w, log)
	if err != nil {
		cancel()
		_ = p.Stop(context.Background())
		log.Error("exiting", "err", err)
		return 1
	}
	defer stopAdmin()
	if ready != nil {
		ready <- p
	}
	sig := awaitStop(sigs, w.Refresh)
	cancel() // no new routes while draining
	if err := shutdown(p, sig, sigs, shutdownTimeout(cfg.Options()), log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// firstProxy waits until a valid config is published and returns a
// proxy built from it; ok is false when a signal asked to stop first.
func (f *fleetFlags) firstProxy(c *cluster.Client, log *slog.Logger, sigs <-chan os.Signal) (p *smartproxy.Proxy, cfg *smartproxy.Config, doc cluster.Document, ok bool) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	waiting, refused := "", int64(0)
	for {
		d, err := c.Config(context.Background())
		switch {
		case err != nil:
			if err.Error() != waiting {
				waiting = err.Error()
				log.Warn("waiting for a configuration", "key", c.ConfigKey(), "err", err)
			}
		case d.Revision != refused:
			if cfg, err = smartproxy.ParseConfig(d.Data, smartproxy.FormatJSON); err == nil {
				opts := cfg.Options()
				opts.Logger = log
				f.override(&opts)
				if err = useClusterACME(c, cfg, &opts, log); err == nil {
					p, err = smartproxy.New(opts)
				}
				if err == nil {
					return p, cfg, d, true
				}
			}
			refused = d.Revision
			log.Error("configuration refused; waiting for a valid one", "revision", d.Revision, "err", err)
		}
		select {
		case s := <-sigs:
			if s != syscall.SIGHUP {
				log.Info("stopped before a configuration was running", "signal", s.String())
				return nil, nil, cluster.Document{}, false
			}
		case <-tick.C:
		}
	}
}

// applyDocument applies a published config's routes, as SIGHUP applies
// a file's; an error leaves the running routes.
func applyDocument(p *smartproxy.Proxy, d cluster.Document, settings []byte, log *slog.Logger) error {
	cfg, err := smartproxy.ParseConfig(d.Data, smartproxy.FormatJSON)
	if err != nil {
		return err
	}
	if err := p.UpdateRoutes(cfg.Routes); err != nil {
		return err
	}
	if s := settingsOf(cfg); settings != nil && s != nil && !bytes.Equal(s, settings) {
		log.Warn("settings other than routes changed in the published config; restart the instance to apply them", "revision", d.Revision)
	}
	return nil
}

// useClusterACME gives the instance an ACME manager on the fleet's etcd
// store and order lock when the published config needs one (an acme
// block, or routes with certificate "auto"): every instance then loads
// the certificates one of them ordered.
func useClusterACME(c *cluster.Client, cfg *smartproxy.Config, opts *smartproxy.Options, log *slog.Logger) error {
	mc, ok := cfg.ACMEManagerConfig()
	if !ok {
		return nil
	}
	mc.Storage, mc.Locker = c.Storage(), c.Locker()
	mc.Logger = log
	m, err := acme.NewManager(mc)
	if err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	opts.ACME = m
	return nil
}
