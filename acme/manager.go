package acme

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
)

// ErrNotManaged is wrapped by GetCertificate's error for a server name
// the Manager does not manage, so that a caller chaining stores can tell
// it from a managed name without a certificate.
var ErrNotManaged = errors.New("acme: server name not managed")

// ErrNoCertificateYet is wrapped by GetCertificate's error for a managed
// name that has no certificate (yet, or after a failed order) when there
// is no Fallback.
var ErrNoCertificateYet = errors.New("acme: no certificate for server name yet")

// Manager obtains, stores, renews and serves certificates for a set of
// names. It implements the proxy's CertificateStore (GetCertificate).
// All methods are safe for concurrent use.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	storage Storage
	locker  Locker
	client  *http.Client
	chal    challenges

	ctx    context.Context // parent of every worker; cancelled by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	manageMu sync.Mutex // one Manage at a time: each computes the set against the last
	mu       sync.Mutex
	names    map[string]*entry
	served   atomic.Pointer[map[string]*entry] // copy of names for GetCertificate, which takes no lock
	started  bool
	stopped  bool

	acctMu   sync.Mutex
	accounts map[string]*acme.Client // by directory + email
}

// entry is one managed name. Its worker goroutine is the only one that
// orders for it, which is what makes "one order per name at a time" hold
// within a process (the Locker extends it across processes).
type entry struct {
	name string
	set  Settings // resolved
	cert atomic.Pointer[tls.Certificate]

	// Guarded by Manager.mu.
	source     Source
	lastErr    string
	next       time.Time     // when the worker wakes next; zero: only Renew wakes it
	attempting bool          // an order (or Provision call) is running
	waitCh     chan struct{} // closed (and replaced) when an attempt ends

	// Owned by the worker goroutine.
	failures     int
	dueAgain     int  // successes that left a certificate already due
	preferALPN   bool // the last HTTP-01 validation failed: try TLS-ALPN-01
	provisioned  bool // Provision was asked since the worker started
	expiringSent string
	ocspNext     time.Time
	ocspFailures int
	revoked      bool // the OCSP responder said so: order a new one now

	force  chan renewReq
	cancel context.CancelFunc
	done   chan struct{}
}

type renewReq struct{ done chan error }

// NewManager checks cfg and returns a Manager that manages no names yet.
// It makes no network request.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.RenewCheckInterval == 0 {
		cfg.RenewCheckInterval = DefaultRenewCheckInterval
	}
	if cfg.HandshakeWait == 0 {
		cfg.HandshakeWait = DefaultHandshakeWait
	}
	if cfg.backoffBase == 0 {
		cfg.backoffBase = defaultBackoffBase
	}
	if cfg.backoffCap == 0 {
		cfg.backoffCap = defaultBackoffCap
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, storage: cfg.Storage, locker: cfg.Locker, client: cfg.HTTPClient,
		names: map[string]*entry{}, accounts: map[string]*acme.Client{}}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.storage == nil {
		m.storage = NewFileStorage(DefaultStorageDir)
	}
	if m.locker == nil {
		if l, ok := m.storage.(Locker); ok {
			m.locker = l
		} else {
			m.locker = processLocks
		}
	}
	if m.client == nil {
		m.client = &http.Client{Timeout: 60 * time.Second}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Manage sets the names the Manager manages, replacing the previous set:
// names no longer listed stop being served and renewed, names whose
// Settings changed start over. For each new name it loads a stored
// certificate that is still valid (no network); once the Manager has
// started, names without one are ordered in the background.
func (m *Manager) Manage(ctx context.Context, domains []Domain) error {
	m.manageMu.Lock()
	defer m.manageMu.Unlock()
	want := make(map[string]Settings, len(domains))
	for i, d := range domains {
		name, err := normalizeName(d.Name)
		if err != nil {
			return fmt.Errorf("domains[%d].Name: %w", i, err)
		}
		s := m.cfg.Settings
		if d.Settings != nil {
			if err := d.Settings.validate(fmt.Sprintf("domains[%d].Settings.", i)); err != nil {
				return err
			}
			s = *d.Settings
		}
		s = s.resolve()
		if prev, dup := want[name]; dup && prev != s {
			return fmt.Errorf("acme: domains[%d]: %s listed twice with different settings", i, name)
		}
		want[name] = s
	}
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("acme: Manage after Stop")
	}
	var fresh []*entry
	for name, s := range want {
		if e := m.names[name]; e == nil || e.set != s {
			fresh = append(fresh, &entry{name: name, set: s, waitCh: make(chan struct{}), force: make(chan renewReq)})
		}
	}
	m.mu.Unlock()

	for _, e := range fresh {
		c, err := m.loadStored(ctx, e.set, e.name)
		switch {
		case err == nil && c != nil:
			e.cert.Store(c)
			e.source = SourceACME
			if len(c.Leaf.OCSPServer) > 0 {
				e.ocspNext = time.Now()
			}
		case err != nil && !errors.Is(err, ErrNotExist):
			// The worker loads again under the lock before any order.
			m.log.Warn("acme: loading stored certificate", "name", e.name, "err", err)
		}
	}

	var gone []*entry
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("acme: Manage after Stop")
	}
	for name, e := range m.names {
		if s, ok := want[name]; !ok || e.set != s {
			gone = append(gone, e)
			delete(m.names, name)
		}
	}
	for _, e := range fresh {
		m.names[e.name] = e
		if m.started {
			m.startWorker(e)
		}
	}
	served := maps.Clone(m.names)
	m.served.Store(&served)
	m.mu.Unlock()
	for _, e := range gone {
		if e.cancel != nil {
			e.cancel()
			<-e.done
		}
	}
	return nil
}

// Start begins ordering missing certificates and the renewal loop. The
// proxy calls it once its listeners are up, so that the CA's validation
// requests find them.
func (m *Manager) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopped:
		return errors.New("acme: Start after Stop")
	case m.started:
		return errors.New("acme: Start called twice")
	}
	m.started = true
	for _, e := range m.names {
		m.startWorker(e)
	}
	return nil
}

// startWorker runs e's worker; m.mu is held.
func (m *Manager) startWorker(e *entry) {
	ctx, cancel := context.WithCancel(m.ctx)
	e.cancel, e.done = cancel, make(chan struct{})
	e.next = time.Now()
	m.wg.Add(1)
	go m.run(ctx, e)
}

// Stop ends every worker (an order in progress is abandoned) and waits
// for them, or until ctx is done. The Manager cannot be restarted.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		m.client.CloseIdleConnections()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("acme: stop: %w", ctx.Err())
	}
}

// GetCertificate returns the certificate for hello's server name. A
// hello offering only "acme-tls/1" gets the TLS-ALPN-01 challenge
// certificate (RFC 8737) of a name being validated. A managed name
// without a certificate waits for its order in progress (at most
// Config.HandshakeWait or until the client gives up), then gets
// Config.Fallback or an error; an unmanaged name gets an error at once.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
		if c := m.chal.alpnCert(name); c != nil {
			return c, nil
		}
		return nil, fmt.Errorf("acme: no TLS-ALPN-01 challenge pending for %q", name)
	}
	var e *entry
	if names := m.served.Load(); names != nil {
		e = (*names)[name]
	}
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotManaged, name)
	}
	if c := e.cert.Load(); c != nil {
		return c, nil
	}
	m.mu.Lock()
	ch := e.waitCh
	wait := e.attempting || e.lastErr == ""
	m.mu.Unlock()
	if wait {
		t := time.NewTimer(m.cfg.HandshakeWait)
		var hctx <-chan struct{}
		if ctx := hello.Context(); ctx != nil {
			hctx = ctx.Done()
		}
		select {
		case <-ch:
		case <-t.C:
		case <-hctx:
		case <-m.ctx.Done(): // stopping
		}
		t.Stop()
		if c := e.cert.Load(); c != nil {
			return c, nil
		}
	}
	if m.cfg.Fallback != nil {
		return m.cfg.Fallback, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoCertificateYet, name)
}

// Renew orders a new certificate for name now, whatever its state, and
// waits for the outcome. Another process that renewed it meanwhile
// (found in Storage under the lock) counts as done.
func (m *Manager) Renew(ctx context.Context, name string) error {
	n, err := normalizeName(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	e := m.names[n]
	var done chan struct{}
	if e != nil {
		done = e.done
	}
	m.mu.Unlock()
	switch {
	case e == nil:
		return fmt.Errorf("%w: %q", ErrNotManaged, n)
	case done == nil:
		return errors.New("acme: Renew before Start")
	}
	req := renewReq{done: make(chan error, 1)}
	select {
	case e.force <- req:
	case <-done:
		return fmt.Errorf("acme: renew %s: manager stopped or name removed", n)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HTTPPorts returns the distinct ports on which managed names expect
// HTTP-01 challenges, sorted.
func (m *Manager) HTTPPorts() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ports []int
	for _, e := range m.names {
		if !e.set.DisableHTTP01 && !slices.Contains(ports, e.set.HTTPPort) {
			ports = append(ports, e.set.HTTPPort)
		}
	}
	slices.Sort(ports)
	return ports
}

// TLSALPNEnabled reports whether some managed name may be validated with
// TLS-ALPN-01, so that terminating listeners must offer "acme-tls/1".
func (m *Manager) TLSALPNEnabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.names {
		if !e.set.DisableTLSALPN {
			return true
		}
	}
	return false
}

// Settings returns the manager's default settings (Config.Settings), over
// which a caller merges per-name overrides such as a route's
// action.tls.acme before passing them to Manage.
func (m *Manager) Settings() Settings { return m.cfg.Settings }
