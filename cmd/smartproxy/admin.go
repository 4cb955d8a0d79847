package main

import (
	"context"
	"log/slog"
	"os"
	"sync"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/admin"
)

// adminTokenEnv names the environment variable that may hold the admin
// token, so that it need not be written in the config file (a flag would
// show it in the process list).
const adminTokenEnv = "SMARTPROXY_ADMIN_TOKEN"

// adminConfig returns the admin API's settings from the config file's
// admin block, the -admin flag (which overrides its listen address) and
// SMARTPROXY_ADMIN_TOKEN (which overrides its token); nil when neither
// asks for the API. A public address without a token is an error here,
// before anything listens.
func adminConfig(cfg *smartproxy.Config, flagAddr string) (*admin.Config, error) {
	var ac admin.Config
	if cfg.Admin != nil {
		ac.Listen, ac.Token = cfg.Admin.Listen, cfg.Admin.Token
	}
	if flagAddr != "" {
		ac.Listen = flagAddr
	}
	if ac.Listen == "" {
		return nil, nil
	}
	if tok := os.Getenv(adminTokenEnv); tok != "" {
		ac.Token = tok
	}
	ac.Source = noSource{} // replaced by the proxy in startAdmin
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	return &ac, nil
}

// noSource only lets adminConfig validate before the proxy exists.
type noSource struct{ admin.Source }

// startAdmin serves the admin API for p when ac is set; stop closes it.
func startAdmin(p *smartproxy.Proxy, ac *admin.Config, rl *reloader, log *slog.Logger) (stop func(), err error) {
	if ac == nil {
		return func() {}, nil
	}
	cfg := *ac
	cfg.Source, cfg.Collector, cfg.Reload = p.AdminSource(), p.Collector(), rl.reload
	return serveAdmin(cfg, log)
}

// reloader serialises reloads from SIGHUP and from POST /reload.
type reloader struct {
	mu       sync.Mutex
	p        *smartproxy.Proxy
	path     string
	format   smartproxy.ConfigFormat
	settings []byte
	log      *slog.Logger
}

func (r *reloader) reload(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return reload(r.p, r.path, r.format, r.settings, r.log)
}
