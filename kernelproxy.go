package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/nftables"
)

// KernelForwarder forwards the routes with forwardingEngine "nftables".
// *nftables.Manager is the default; Options.Kernel swaps it. Calls come
// one at a time, in the order Start, UpdateRoutes…, Stop.
type KernelForwarder interface {
	// Start installs the routes.
	Start(ctx context.Context, routes []nftables.Route) error
	// UpdateRoutes replaces the routes, atomically.
	UpdateRoutes(ctx context.Context, routes []nftables.Route) error
	// Stop removes everything Start installed.
	Stop(ctx context.Context) error
	// Status reads the routes' rules and counters.
	Status(ctx context.Context) (nftables.Status, error)
}

// kernelState is the proxy's KernelForwarder, made on first need.
type kernelState struct {
	opts    *Options
	once    sync.Once
	fwd     KernelForwarder
	err     error // why fwd could not be made
	mu      sync.Mutex
	started bool
}

// available makes the forwarder if needed and says whether it works.
func (k *kernelState) available() error {
	k.once.Do(func() {
		if k.opts.Kernel != nil {
			k.fwd = k.opts.Kernel
			return
		}
		m, err := nftables.New(nftables.Config{TableName: k.opts.NftablesTable, Logger: k.opts.Logger})
		if err != nil {
			k.err = err
			return
		}
		k.fwd = m
	})
	return k.err
}

// splitKernelRoutes takes the kernel's routes out of compiled, leaving the
// user-space ones; a kernel route whose engine is unavailable stays in user
// space if it asks for forwardingEngineFallback and is an error otherwise.
// Ports shared with another route are refused: the kernel would take the
// packets before the other route could see them.
func splitKernelRoutes(compiled []*Route, opts Options) ([]*Route, []nftables.Route, error) {
	var user []*Route
	var kernel []nftables.Route
	var errs []error
	for _, r := range compiled {
		st := r.state
		if st.kernel == nil {
			user = append(user, r)
			continue
		}
		if err := opts.kernel.available(); err != nil {
			if !r.Action.ForwardingEngineFallback {
				errs = append(errs, &RouteError{Route: routeLabel(r, st.index), Field: "action.forwardingEngine", Err: fmt.Errorf("%w (set forwardingEngineFallback to serve the route in user space instead)", err)})
				continue
			}
			opts.Logger.Warn("nftables unavailable: serving the route in user space (TCP only)", "route", r.Name, "err", err)
			user = append(user, r)
			continue
		}
		kernel = append(kernel, *st.kernel)
	}
	errs = append(errs, checkKernelPorts(user, compiled)...)
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return user, kernel, nil
}

// checkKernelPorts refuses a port (per protocol) that a kernel route
// shares with any other route.
func checkKernelPorts(user, all []*Route) []error {
	type key struct {
		udp  bool
		port int
	}
	owner := map[key]*Route{}
	inUser := map[*Route]bool{}
	for _, r := range user {
		inUser[r] = true
		r.Match.Ports.Each(func(p int) bool { owner[key{false, p}] = r; return true })
	}
	var errs []error
	for _, r := range all {
		kr := r.state.kernel
		if inUser[r] {
			continue // a user-space route, or a kernel route fallen back
		}
		var tcp, udp bool
		switch kr.Protocol {
		case nftables.UDP:
			udp = true
		case nftables.All:
			tcp, udp = true, true
		default:
			tcp = true
		}
		r.Match.Ports.Each(func(p int) bool {
			for _, k := range []key{{false, p}, {true, p}} {
				if (k.udp && !udp) || (!k.udp && !tcp) {
					continue
				}
				if o := owner[k]; o != nil && o != r {
					errs = append(errs, &RouteError{Route: routeLabel(r, r.state.index), Field: "match.ports", Err: fmt.Errorf("port %d is also used by route %q: the kernel would take its packets", p, o.Name)})
					return false
				}
				owner[k] = r
			}
			return true
		})
	}
	return errs
}

// apply brings the kernel in step with set (Start and UpdateRoutes).
func (k *kernelState) apply(ctx context.Context, set *routeSet) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fwd == nil {
		return nil // no route ever needed the kernel
	}
	if !k.started {
		if len(set.kernel) == 0 {
			return nil
		}
		if err := k.fwd.Start(ctx, set.kernel); err != nil {
			return fmt.Errorf("smartproxy: %w", err)
		}
		k.started = true
		return nil
	}
	if err := k.fwd.UpdateRoutes(ctx, set.kernel); err != nil {
		return fmt.Errorf("smartproxy: %w", err)
	}
	return nil
}

// stop removes the kernel's rules.
func (k *kernelState) stop(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.started {
		return nil
	}
	k.started = false
	return k.fwd.Stop(context.WithoutCancel(ctx)) // the rules must go even when draining timed out
}

// status reads the kernel's counters; the zero Status when no kernel
// route was ever started.
func (k *kernelState) status(ctx context.Context) (nftables.Status, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.started {
		return nftables.Status{}, nil
	}
	return k.fwd.Status(ctx)
}

// NftablesStatus returns the rules and kernel counters of the routes with
// forwardingEngine "nftables".
func (p *Proxy) NftablesStatus(ctx context.Context) (nftables.Status, error) {
	return p.opts.kernel.status(ctx)
}

// addKernelMetrics fills m.Kernel; a failed read is logged, not fatal to
// Metrics.
func (p *Proxy) addKernelMetrics(m *connection.Metrics) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := p.opts.kernel.status(ctx)
	if err != nil {
		p.log.Warn("reading nftables counters", "err", err)
		return
	}
	for _, r := range st.Routes {
		if m.Kernel == nil {
			m.Kernel = make(map[string]connection.KernelRoute, len(st.Routes))
		}
		m.Kernel[r.Name] = connection.KernelRoute{Rules: r.Rules, Connections: r.Connections, Packets: r.Packets, Bytes: r.Bytes, Dropped: r.Dropped}
	}
}
