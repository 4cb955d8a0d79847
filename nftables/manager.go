//go:build linux

package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	nft "github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Manager owns one nftables table and keeps it in step with a set of
// routes: Start creates it, UpdateRoutes changes the rules of the routes
// that changed, Stop deletes it. Every change is one atomic netlink batch.
// It is safe for concurrent use.
type Manager struct {
	name  string
	netns int
	log   *slog.Logger

	mu      sync.Mutex
	started bool
	routes  map[string]*installed // by route name
	gen     uint64                // numbers route generations (object names)
	warns   []string
}

// installed is a route whose objects are in the table.
type installed struct {
	route Route
	fp    string
	names routeNames
}

// New checks that this process can use nftables (it has CAP_NET_ADMIN
// and the kernel has nf_tables) and returns a Manager that has not
// touched the kernel yet.
func New(cfg Config) (*Manager, error) {
	name := cfg.TableName
	if name == "" {
		name = DefaultTableName
	}
	if !tableNameRE.MatchString(name) {
		return nil, fmt.Errorf("nftables: table name %q: want a letter, then up to 63 letters, digits, '-' or '_'", name)
	}
	if err := probe(cfg.NetNS); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{name: name, netns: cfg.NetNS, log: log, routes: map[string]*installed{}}, nil
}

// Probe reports whether this process can use nftables: nil, or an error
// wrapping ErrNoPermission or ErrUnavailable that says how to fix it.
func Probe() error { return probe(0) }

func probe(netns int) error {
	c, err := dial(netns)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	_, err = c.ListTablesOfFamily(nft.TableFamilyINet)
	return classify(err)
}

// classify turns netlink errors into the package's errors.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (%v): run the proxy as root, or grant the capability (setcap cap_net_admin+ep <binary>, or AmbientCapabilities=CAP_NET_ADMIN in its systemd unit)", ErrNoPermission, err)
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w (%v): load it with modprobe nf_tables (kernel 5.2 or later is needed for inet NAT)", ErrUnavailable, err)
	}
	return err
}

// dial returns a netlink connection to nf_tables in the namespace.
func dial(netns int) (*nft.Conn, error) {
	if netns != 0 {
		return nft.New(nft.WithNetNSFd(netns))
	}
	return nft.New()
}

// TableName returns the name of the manager's table.
func (m *Manager) TableName() string { return m.name }

func (m *Manager) table() *nft.Table { return &nft.Table{Name: m.name, Family: nft.TableFamilyINet} }

// Start creates the table with the routes' rules, replacing a table of
// the same name that a crashed process of ours left behind. A table
// owned by a live process, or one we did not make, is left alone and
// reported. Missing sysctls (forwarding, route_localnet) are logged and
// listed in Status.
func (m *Manager) Start(ctx context.Context, routes []Route) error {
	if err := checkRoutes(routes); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.begin(ctx, false)
	if err != nil {
		return err
	}
	t := m.table()
	if err := m.claim(); err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			m.release()
		}
	}()
	stale, err := m.findStale(c)
	if err != nil {
		return err
	}
	if stale != "" {
		m.log.Warn("nftables: replacing the table a stopped proxy left", "table", m.name, "owner", stale)
		c.DelTable(t)
	}
	c.AddTable(t)
	if err := baseChains(c, t); err != nil {
		return err
	}
	c.AddRule(ownerRule(t))
	next := map[string]*installed{}
	for i := range routes {
		in, err := m.install(c, t, &routes[i])
		if err != nil {
			return err
		}
		next[routes[i].Name] = in
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: creating table %s: %w", m.name, classify(err))
	}
	done = true
	m.routes, m.started = next, true
	m.warns = m.checkSysctls(routes)
	for _, w := range m.warns {
		m.log.Warn("nftables: " + w)
	}
	return nil
}

func (m *Manager) checkSysctls(routes []Route) []string {
	if m.netns != 0 {
		return nil
	}
	return CheckSysctls(routes)
}

// begin checks the manager's state and ctx, and dials; m.mu is held.
func (m *Manager) begin(ctx context.Context, wantStarted bool) (*nft.Conn, error) {
	switch {
	case m.started && !wantStarted:
		return nil, errors.New("nftables: already started")
	case !m.started && wantStarted:
		return nil, errors.New("nftables: not started")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := dial(m.netns)
	if err != nil {
		return nil, classify(err)
	}
	return c, nil
}

// install adds a new generation of r's objects to the batch.
func (m *Manager) install(c *nft.Conn, t *nft.Table, r *Route) (*installed, error) {
	m.gen++
	n := routeNames{prefix: fmt.Sprintf("%s-g%d", chainBase(r.Name), m.gen)}
	if err := addRoute(c, t, r, n); err != nil {
		return nil, fmt.Errorf("nftables: route %q: %w", r.Name, err)
	}
	return &installed{route: *r, fp: r.fingerprint(), names: n}, nil
}

// UpdateRoutes makes the table hold routes: routes that are new or
// changed get new chains and sets, removed and replaced ones lose theirs,
// and unchanged routes keep their rules and counters. It is one atomic
// batch: on error the table is as it was.
func (m *Manager) UpdateRoutes(ctx context.Context, routes []Route) error {
	if err := checkRoutes(routes); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.begin(ctx, true)
	if err != nil {
		return err
	}
	t := m.table()
	next := map[string]*installed{}
	var gone []routeNames
	for i := range routes {
		r := &routes[i]
		if old, ok := m.routes[r.Name]; ok && old.fp == r.fingerprint() {
			next[r.Name] = old
			continue
		}
		in, err := m.install(c, t, r)
		if err != nil {
			return err
		}
		next[r.Name] = in
	}
	for name, old := range m.routes {
		if next[name] != old {
			gone = append(gone, old.names)
		}
	}
	if err := removeRoutes(c, t, gone); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: updating table %s: %w", m.name, classify(err))
	}
	m.routes = next
	m.warns = m.checkSysctls(routes)
	return nil
}

// Stop deletes the table. It is idempotent.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := dial(m.netns)
	if err != nil {
		return classify(err)
	}
	c.DelTable(m.table())
	if err := c.Flush(); err != nil {
		// Someone else may have deleted it already: that is what we want.
		if _, lerr := c.ListTableOfFamily(m.name, nft.TableFamilyINet); lerr == nil || !errors.Is(lerr, unix.ENOENT) {
			return fmt.Errorf("nftables: deleting table %s: %w", m.name, classify(err))
		}
	}
	m.started, m.routes = false, map[string]*installed{}
	m.release()
	return nil
}

// removeRoutes adds the deletion of route generations to the batch: their
// jump rules (found by their tag), chains and sets.
func removeRoutes(c *nft.Conn, t *nft.Table, gone []routeNames) error {
	if len(gone) == 0 {
		return nil
	}
	tags := map[string]bool{}
	for _, n := range gone {
		tags[string(ruleTag(n.prefix, "jump"))] = true
	}
	for _, base := range []string{chainPre, chainOut, chainPost, chainFwd} {
		rules, err := c.GetRules(t, &nft.Chain{Name: base, Table: t})
		if err != nil {
			return fmt.Errorf("nftables: listing chain %s: %w", base, classify(err))
		}
		for _, r := range rules {
			if tags[string(r.UserData)] {
				if err := c.DelRule(r); err != nil {
					return err
				}
			}
		}
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return fmt.Errorf("nftables: listing sets: %w", classify(err))
	}
	for _, n := range gone {
		for _, name := range []string{n.fwd(), n.count(), n.nat(), n.snat()} {
			ch := &nft.Chain{Name: name, Table: t}
			c.FlushChain(ch)
			c.DelChain(ch)
		}
	}
	for _, n := range gone {
		for _, s := range sets {
			if strings.HasPrefix(s.Name, n.prefix+"-") {
				c.DelSet(s)
			}
		}
	}
	return nil
}
