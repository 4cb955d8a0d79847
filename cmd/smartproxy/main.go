// Command smartproxy runs a proxy from a JSON or YAML config file in the
// TypeScript SmartProxy schema.
//
//	smartproxy -config proxy.yaml          # run; SIGHUP reloads routes, SIGINT/SIGTERM drain and exit
//	smartproxy -config proxy.yaml -check   # validate and exit (non-zero with the errors)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gosmartproxy/smartproxy"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr, nil))
}

// run is main without the process exit, so tests can drive it. ready, when
// not nil, receives the proxy once it listens.
func run(args []string, stderr io.Writer, ready chan<- *smartproxy.Proxy) int {
	fs := flag.NewFlagSet("smartproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (.json, .yaml or .yml)")
	check := fs.Bool("check", false, "validate the config file and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log as JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "smartproxy: -config is required")
		fs.Usage()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "smartproxy: -log-level: %v\n", err)
		return 2
	}
	hopts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(stderr, hopts)
	if *logJSON {
		handler = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(handler)

	opts, err := loadOptions(*configPath, log)
	if err == nil {
		var p *smartproxy.Proxy
		if p, err = smartproxy.New(opts); err == nil && *check {
			_ = p.Stop(context.Background())
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "smartproxy: %v\n", err)
		return 1
	}
	if *check {
		fmt.Fprintf(stderr, "%s: OK (%d routes)\n", *configPath, len(opts.Routes))
		return 0
	}
	if err := serve(*configPath, opts, log, ready); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func loadOptions(path string, log *slog.Logger) (smartproxy.Options, error) {
	cfg, err := smartproxy.LoadConfig(path)
	if err != nil {
		return smartproxy.Options{}, err
	}
	opts := cfg.Options()
	opts.Logger = log
	return opts, nil
}

// serve runs the proxy until SIGINT or SIGTERM, reloading routes on SIGHUP.
func serve(path string, opts smartproxy.Options, log *slog.Logger, ready chan<- *smartproxy.Proxy) error {
	p, err := smartproxy.New(opts)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := p.Start(context.Background()); err != nil {
		return err
	}
	log.Info("smartproxy started", "config", path, "routes", len(opts.Routes), "ports", p.Ports())
	if ready != nil {
		ready <- p
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reload(p, path, log)
			continue
		}
		log.Info("shutting down", "signal", sig.String(), "timeout", opts.GracefulShutdownTimeout)
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout(opts))
		err := p.Stop(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			log.Warn("drain timed out; remaining connections were closed")
			return nil
		}
		return err
	}
	return nil
}

func shutdownTimeout(o smartproxy.Options) time.Duration {
	if o.GracefulShutdownTimeout > 0 {
		return o.GracefulShutdownTimeout
	}
	return smartproxy.DefaultGracefulShutdownTimeout
}

// reload re-reads the config file and applies its routes; a bad file
// keeps the running routes and says why.
func reload(p *smartproxy.Proxy, path string, log *slog.Logger) {
	cfg, err := smartproxy.LoadConfig(path)
	if err == nil {
		err = p.UpdateRoutes(cfg.Routes)
	}
	if err != nil {
		log.Error("reload failed; keeping the current routes", "config", path, "err", err)
		return
	}
	log.Info("reloaded routes", "config", path, "routes", len(cfg.Routes), "ports", p.Ports())
}
