package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults for the zero values of Config.
const (
	DefaultDialTimeout   = 5 * time.Second
	DefaultOpTimeout     = 5 * time.Second
	DefaultProbeInterval = time.Second
	DefaultLockTTL       = 10 * time.Second
)

// Config says how to reach etcd and where the fleet's keys are.
type Config struct {
	// Endpoints are the etcd client URLs (http://host:2379 or
	// https://host:2379); give every member so that losing one is
	// survived.
	Endpoints []string
	// TLS, when not nil, is used to reach https endpoints (TLSConfig
	// builds one from PEM files).
	TLS *tls.Config
	// Prefix holds every key of the fleet, for example
	// "/smartproxy/prod"; fleets sharing an etcd cluster use different
	// prefixes. It must not be empty; a trailing "/" is dropped.
	Prefix string
	// DialTimeout bounds the first connection (DefaultDialTimeout).
	DialTimeout time.Duration
	// OpTimeout bounds every single etcd operation, also when the
	// caller's context has no deadline (DefaultOpTimeout).
	OpTimeout time.Duration
	// ProbeInterval is how often a Watcher checks that etcd answers and
	// that it runs the current revision (DefaultProbeInterval).
	ProbeInterval time.Duration
	// LockTTL is the lease of a Locker's lock: a holder that dies loses
	// the lock after at most this long (DefaultLockTTL; etcd rounds it
	// up to whole seconds and to its own minimum).
	LockTTL time.Duration
	// Logger receives the package's log lines (slog.Default when nil).
	Logger *slog.Logger
}

// Client is a connection to etcd for one fleet prefix. It is safe for
// concurrent use; Close it when done.
type Client struct {
	etcd   *clientv3.Client
	prefix string
	cfg    Config
	log    *slog.Logger
}

// Dial connects to etcd. The connection is made in the background: Dial
// fails for a bad configuration, not for an etcd that is down (the first
// operations fail then, and the client keeps reconnecting).
func Dial(cfg Config) (*Client, error) {
	prefix, err := normalizePrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("cluster: no etcd endpoints")
	}
	for _, e := range cfg.Endpoints {
		if strings.TrimSpace(e) == "" {
			return nil, errors.New("cluster: empty etcd endpoint")
		}
	}
	setDefault(&cfg.DialTimeout, DefaultDialTimeout)
	setDefault(&cfg.OpTimeout, DefaultOpTimeout)
	setDefault(&cfg.ProbeInterval, DefaultProbeInterval)
	setDefault(&cfg.LockTTL, DefaultLockTTL)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: cfg.DialTimeout,
		// Dead connections are noticed by keepalive pings, not only by
		// the next request.
		DialKeepAliveTime:    cfg.ProbeInterval * 5,
		DialKeepAliveTimeout: cfg.OpTimeout,
		// The client's own zap logging would duplicate ours in another
		// format; this package logs what an operator acts on.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	return &Client{etcd: etcd, prefix: prefix, cfg: cfg, log: cfg.Logger}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// normalizePrefix checks a key prefix and drops a trailing "/".
func normalizePrefix(p string) (string, error) {
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return "", errors.New("cluster: empty key prefix (give one such as /smartproxy/prod)")
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f {
			return "", fmt.Errorf("cluster: key prefix %q holds a space or control character", p)
		}
	}
	return p, nil
}

// Close ends the connection; a Watcher or lock of this client stops
// working.
func (c *Client) Close() error { return c.etcd.Close() }

// Prefix is the fleet's key prefix, without a trailing "/".
func (c *Client) Prefix() string { return c.prefix }

// ConfigKey is the etcd key of the configuration document.
func (c *Client) ConfigKey() string { return c.prefix + "/config" }

// opContext bounds one operation by the operation timeout.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.OpTimeout)
}

// TLSConfig builds the client TLS settings for https endpoints: a client
// certificate and key (both or neither) and the CA that signed the
// members' certificates ("" trusts the system roots).
func TLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("cluster: give both the client certificate and its key, or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: CA file %s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
