// Command smartproxy runs a proxy from a JSON or YAML config file in the
// TypeScript SmartProxy schema.
//
//	smartproxy -config proxy.yaml          # run; SIGHUP reloads routes, SIGINT/SIGTERM drain and exit
//	smartproxy -config proxy.yaml -check   # validate and exit (non-zero with the errors)
//	smartproxy -config proxy.conf -format yaml   # a file not named .json, .yaml or .yml
//
// The format follows the file's extension: .json is JSON, .yaml and .yml
// are YAML. A file with any other name is refused unless -format json or
// -format yaml says what it holds.
//
// SIGHUP re-reads the file and applies its routes without dropping open
// connections; a file that does not parse or validate keeps the running
// routes and logs why. Other settings (listen address, timeouts, limits,
// defaults) only take effect on restart, and a reload that changes them
// says so. SIGINT or SIGTERM stops accepting and waits for open
// connections up to gracefulShutdownTimeout (30 s by default); a second
// SIGINT or SIGTERM closes them at once.
//
// The file must hold one JSON or YAML document (trailing data or a second
// document is an error) and be a regular file of at most 16 MiB; numbers
// must fit their fields. Every mistake in the file is reported, one a
// line, each with its JSON path (routes[2].action.targets[0].port) and,
// for YAML, its line and column; fields of the TS schema this library
// does not implement are refused saying why, and a misspelt field gets
// the nearest known name. Two routes of the same name are refused,
// naming both indices. -check locates the validation errors of a YAML
// file too ("line 7 col 62: route #1: action.targets[0].port: ...").
//
// Relative certFile, keyFile and caFile paths are resolved against the
// config file's directory, so the file and its certificates can move
// together and the proxy can start from any working directory.
//
// With reusePort: true in the file, several smartproxy processes (same
// user, all with reusePort) serve the same ports, the kernel spreading new
// connections among them: one per core, or an old and a new binary side by
// side during an upgrade (start the new one, then SIGTERM the old one,
// which drains). Without it a port another process holds is an error at
// start. The admin address (-admin) is never shared: give each process its
// own, or none. ACME challenges are answered only by the process that
// ordered the certificate, so with acme share ports only during upgrades.
//
// A fleet of instances shares one config through etcd (fleet.go; README
// "Running a fleet"):
//
//	smartproxy -publish proxy.yaml -etcd URLS -cluster-prefix /smartproxy/prod   # validate, then store
//	smartproxy -etcd URLS -cluster-prefix /smartproxy/prod [-listen 10.0.0.2]    # run, following changes
//
// -listen binds every route port on its address instead of the config's
// listenAddress, with -config too.
//
// Terminating routes with certificate "auto" (or none) get their
// certificates from an ACME CA as the acme block says (Let's Encrypt
// staging when there is no block; a warning says so): the HTTP-01 port
// is shared with the routes on it, or opened for the challenges alone.
// Issued, renewed, failed and expiring certificates are logged. SIGHUP
// hands the reloaded routes' names to the ACME manager; a changed acme
// block needs a restart. -check validates the acme block and the route
// names without touching the network or creating the certificate store.
// acme.certificateStore is relative to the config file's directory too.
//
// Exit status: 0 after a clean or timed-out drain and for a valid -check,
// 1 when the config is invalid or the proxy cannot start, 2 for usage
// errors.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/admin"
	"github.com/gosmartproxy/smartproxy/schema"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr, nil))
}

// run is main without the process exit, so tests can drive it. ready, when
// not nil, receives the proxy once it listens (and once the signal handlers
// are in place); run blocks until it is received.
func run(args []string, stderr io.Writer, ready chan<- *smartproxy.Proxy) int {
	fs := flag.NewFlagSet("smartproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (.json, .yaml or .yml)")
	formatName := fs.String("format", "", "config file format, json or yaml (default: by the file's extension)")
	check := fs.Bool("check", false, "validate the config file and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log as JSON instead of text")
	fleet := addFleetFlags(fs) // -etcd, -cluster-prefix, -publish, -listen: fleet.go
	adminAddr := fs.String("admin", "", "serve the admin API and dashboard on ADDR (loopback unless a token is set; see admin in the config)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0 // asked for: the usage is not an error
		}
		return 2
	}
	if fs.NArg() > 0 {
		// A forgotten "-config" before the file name would otherwise be
		// ignored silently.
		fmt.Fprintf(stderr, "smartproxy: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if code := fleet.usage(configPath, *check, stderr); code != 0 {
		return code
	}
	if *configPath == "" && !fleet.instance() {
		fmt.Fprintln(stderr, "smartproxy: -config is required")
		fs.Usage()
		return 2
	}
	var format smartproxy.ConfigFormat
	switch strings.ToLower(*formatName) {
	case "":
	case "json":
		format = smartproxy.FormatJSON
	case "yaml", "yml":
		format = smartproxy.FormatYAML
	default:
		fmt.Fprintf(stderr, "smartproxy: -format: want json or yaml, got %q\n", *formatName)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "smartproxy: -log-level: %v\n", err)
		return 2
	}
	hopts := &slog.HandlerOptions{Level: level, ReplaceAttr: readableDurations}
	var handler slog.Handler = slog.NewTextHandler(stderr, hopts)
	if *logJSON {
		handler = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(handler)
	if fleet.instance() {
		return fleet.serve(log, *adminAddr, ready)
	}

	cfg, err := smartproxy.LoadConfigFormat(*configPath, format)
	if err != nil {
		// One mistake a line, each naming the file, so that every line
		// reads on its own (and editors can jump to it).
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintf(stderr, "smartproxy: %s\n", line)
		}
		return 1
	}
	opts := cfg.Options()
	opts.Logger = log
	adminCfg, err := adminConfig(cfg, *adminAddr)
	if err != nil {
		fmt.Fprintf(stderr, "smartproxy: %v\n", err)
		return 1
	}
	if *check || fleet.publish != "" {
		if !validate(cfg, opts, *configPath, stderr) {
			return 1
		}
		if fleet.publish != "" {
			return fleet.publishFile(format, log, stderr)
		}
		if len(opts.Routes) == 0 {
			// Valid, but a proxy that listens on nothing is rarely meant.
			fmt.Fprintf(stderr, "%s: OK, but warning: no routes (the proxy would listen on no port)\n", *configPath)
			return 0
		}
		fmt.Fprintf(stderr, "%s: OK (%d routes)\n", *configPath, len(opts.Routes))
		return 0
	}
	fleet.override(&opts)
	if err := serve(*configPath, format, cfg, opts, adminCfg, log, ready); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// validate checks everything Start would, without opening ports, and
// writes the errors (located in a YAML file) naming path.
func validate(cfg *smartproxy.Config, opts smartproxy.Options, path string, stderr io.Writer) bool {
	p, err := smartproxy.New(opts)
	if err == nil {
		_ = p.Stop(context.Background())
		return true
	}
	if lines, ok := locate(cfg, err); ok {
		for _, l := range lines {
			fmt.Fprintf(stderr, "smartproxy: %s: %s\n", path, l)
		}
		return false
	}
	// The library's own "smartproxy: " prefix would repeat ours.
	fmt.Fprintf(stderr, "smartproxy: %s: %s\n", path, strings.TrimPrefix(err.Error(), "smartproxy: "))
	return false
}

// locate writes the validation errors of a YAML config one a line, each
// with the line and column of its field ("line 7 col 15: route "web":
// match.ports[0]: ..."). ok is false, and err is best written as it is,
// when err holds anything but route and field errors or when no field
// has a position (a JSON file).
func locate(cfg *smartproxy.Config, err error) (lines []string, ok bool) {
	var multi interface{ Unwrap() []error }
	if !errors.As(err, &multi) {
		return nil, false
	}
	found := false
	for _, e := range multi.Unwrap() {
		path := ""
		var re *smartproxy.RouteError
		var fe *schema.FieldError
		switch {
		case errors.As(e, &re):
			i, ok := routeIndex(cfg, re.Route)
			if !ok {
				return nil, false
			}
			path = fmt.Sprintf("routes[%d]", i)
			if re.Field != "" {
				path += "." + re.Field
			}
		case errors.As(e, &fe):
			path = fe.Field
		default:
			return nil, false
		}
		if line, col := cfg.Position(path); line > 0 {
			found = true
			lines = append(lines, fmt.Sprintf("line %d col %d: %v", line, col, e))
		} else {
			lines = append(lines, e.Error())
		}
	}
	return lines, found
}

// routeIndex finds the route a RouteError names: "web" (quoted) by its
// name, which ParseConfig keeps unique, or #N by its index.
func routeIndex(cfg *smartproxy.Config, label string) (int, bool) {
	if n, ok := strings.CutPrefix(label, "#"); ok {
		i, err := strconv.Atoi(n)
		return i, err == nil && i >= 0 && i < len(cfg.Routes)
	}
	name, err := strconv.Unquote(label)
	if err != nil {
		return 0, false
	}
	for i := range cfg.Routes {
		if cfg.Routes[i].Name == name {
			return i, true
		}
	}
	return 0, false
}

// readableDurations writes durations as "1.5s" rather than slog's JSON
// default of integer nanoseconds, which operators misread.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// serve runs the proxy until SIGINT or SIGTERM, reloading routes on SIGHUP.
func serve(path string, format smartproxy.ConfigFormat, cfg *smartproxy.Config, opts smartproxy.Options, adminCfg *admin.Config, log *slog.Logger, ready chan<- *smartproxy.Proxy) error {
	p, err := smartproxy.New(opts)
	if err != nil {
		return err
	}
	// Signals are caught before the ports open, so that a signal sent as
	// soon as the proxy answers is never lost or fatal.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := p.Start(context.Background()); err != nil {
		_ = p.Stop(context.Background()) // releases what New started
		return err
	}
	rl := &reloader{p: p, path: path, format: format, settings: settingsOf(cfg), log: log}
	stopAdmin, err := startAdmin(p, adminCfg, rl, log)
	if err != nil {
		_ = p.Stop(context.Background())
		return err
	}
	defer stopAdmin()
	log.Info("smartproxy started", "config", path, "routes", len(opts.Routes), "ports", p.Ports())
	if ready != nil {
		ready <- p
	}
	sig := awaitStop(sigs, func() { _ = rl.reload(context.Background()) })
	return shutdown(p, sig, sigs, shutdownTimeout(opts), log)
}

// awaitStop calls hup for each SIGHUP until SIGINT or SIGTERM arrives,
// and returns that signal.
func awaitStop(sigs <-chan os.Signal, hup func()) os.Signal {
	for {
		sig := <-sigs
		if sig != syscall.SIGHUP {
			return sig
		}
		hup()
	}
}

// shutdown drains the proxy for up to timeout; another SIGINT or SIGTERM
// meanwhile cuts the drain short. Cut connections are not an error: the
// drain ended as configured.
func shutdown(p *smartproxy.Proxy, sig os.Signal, sigs <-chan os.Signal, timeout time.Duration, log *slog.Logger) error {
	log.Info("shutting down", "signal", sig.String(), "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop(ctx) }()
	for {
		select {
		case err := <-stopped:
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				log.Warn("drain cut short; remaining connections were closed", "reason", err)
				return nil
			}
			if err == nil {
				log.Info("stopped")
			}
			return err
		case s := <-sigs:
			if s == syscall.SIGHUP {
				continue // no reloading while going down
			}
			log.Warn("second signal: closing remaining connections now", "signal", s.String())
			cancel()
		}
	}
}

func shutdownTimeout(o smartproxy.Options) time.Duration {
	if o.GracefulShutdownTimeout > 0 {
		return o.GracefulShutdownTimeout
	}
	return smartproxy.DefaultGracefulShutdownTimeout
}

// settingsOf returns the config's settings other than its routes, in a
// comparable form, so a reload can tell that they changed.
func settingsOf(cfg *smartproxy.Config) []byte {
	c := *cfg
	c.Routes = nil
	b, err := json.Marshal(c)
	if err != nil {
		return nil // only routes will be compared then
	}
	return b
}

// reload re-reads the config file and applies its routes; a bad file
// keeps the running routes and says why (in the log and the error).
func reload(p *smartproxy.Proxy, path string, format smartproxy.ConfigFormat, settings []byte, log *slog.Logger) error {
	cfg, err := smartproxy.LoadConfigFormat(path, format)
	if err == nil {
		err = p.UpdateRoutes(cfg.Routes)
	}
	if err != nil {
		log.Error("reload failed; keeping the current routes", "config", path, "err", err)
		return err
	}
	log.Info("reloaded routes", "config", path, "routes", len(cfg.Routes), "ports", p.Ports())
	if s := settingsOf(cfg); settings != nil && s != nil && !bytes.Equal(s, settings) {
		// Defaults in particular would be a surprise: a new default block
		// list must not look applied when it is not.
		log.Warn("settings other than routes changed in the config file; restart to apply them", "config", path)
	}
	return nil
}
