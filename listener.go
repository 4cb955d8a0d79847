package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

// portListener is the one listener of a port, shared by all its routes.
type portListener struct {
	port   int
	ln     net.Listener
	ev     *evloop.Server // instead of ln when event loops serve the port (engine_linux.go)
	once   sync.Once
	closed atomic.Bool // set before ln is closed, so acceptLoop can tell
}

func (l *portListener) close() {
	l.once.Do(func() {
		l.closed.Store(true)
		if l.ev != nil {
			l.ev.Shutdown() // its connections run on; Stop waits for them as for handlers
			return
		}
		_ = l.ln.Close()
	})
}

// reconcileLocked opens the ports set needs that are not open yet, makes
// set the current routes, and closes the ports it no longer uses. Opening
// happens first so that a port that cannot be bound leaves everything as
// it was. Caller holds p.mu.
func (p *Proxy) reconcileLocked(ctx context.Context, set *routeSet) error {
	var opened []*portListener
	for _, port := range sortedPorts(set.ports) {
		if _, ok := p.listeners[port]; ok {
			continue
		}
		if addr, ok := p.engineListenAddr(set, port); ok {
			ev, ln, err := p.listenEngine(ctx, addr, port)
			if err != nil {
				for _, l := range opened {
					l.close()
				}
				return fmt.Errorf("smartproxy: listen on port %d: %w", port, err)
			}
			opened = append(opened, &portListener{port: port, ev: ev, ln: ln}) // ln: not for loops
			continue
		}
		ln, err := p.listen(ctx, port)
		if err != nil {
			for _, l := range opened {
				l.close()
			}
			return fmt.Errorf("smartproxy: listen on port %d: %w", port, err)
		}
		opened = append(opened, &portListener{port: port, ln: ln})
	}
	// Publish the routes before any new accept loop runs: a connection
	// already queued on a new port (a pre-opened or inherited listener) is
	// accepted at once and must be matched against the routes that opened
	// the port, not the previous set, which has no route for it.
	p.set.Store(set)
	for _, l := range opened {
		p.listeners[l.port] = l
		if l.ev != nil {
			// The loops end after Shutdown and their last connection: a handler
			// until then, so Stop drains them like serving goroutines.
			p.handlers.Add(1)
			go func() { <-l.ev.Done(); p.handlers.Done() }()
			continue
		}
		p.acceptors.Add(1)
		go p.acceptLoop(l)
	}
	for port, l := range p.listeners {
		if _, keep := set.ports[port]; !keep {
			l.close()
			delete(p.listeners, port)
		}
	}
	return nil
}

func (p *Proxy) listen(ctx context.Context, port int) (net.Listener, error) {
	addr := net.JoinHostPort(p.opts.ListenAddress, strconv.Itoa(port))
	if p.opts.Listen != nil {
		return p.opts.Listen(ctx, "tcp", addr)
	}
	return p.listenTCP(ctx, "tcp", addr)
}

// listenTCP opens a listener with the keep-alive options applied to
// every connection it accepts (listenConfig is per platform: on Linux it
// sets them once, on the listening socket).
// With ReusePort the socket gets SO_REUSEPORT too (reuseport.go).
func (p *Proxy) listenTCP(ctx context.Context, network, addr string) (net.Listener, error) {
	lc := p.listenConfig()
	if p.opts.ReusePort {
		lc.Control = withReusePort(lc.Control)
	}
	return lc.Listen(ctx, network, addr)
}

// keepAliveConfig sets only SO_KEEPALIVE and the idle time; the probe
// interval and count keep the kernel's settings, which saves two system
// calls per socket on the accept and dial paths. (On Linux the accept path
// sets the same options once, on the listening socket: listener_linux.go.)
func (p *Proxy) keepAliveConfig() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: p.opts.keepAlive(), Idle: p.opts.KeepAliveInitialDelay, Interval: -1, Count: -1}
}

// acceptLoop serves one port until its listener is closed. Temporary
// accept errors (such as running out of file descriptors) back off instead
// of spinning or giving up.
func (p *Proxy) acceptLoop(l *portListener) {
	defer p.acceptors.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			// Listeners from Options.Listen (in-memory ones especially) do
			// not all report net.ErrClosed once closed; retrying those
			// forever would make Stop wait for this loop forever.
			if errors.Is(err, net.ErrClosed) || l.closed.Load() {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed; retrying", "port", l.port, "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		p.handlers.Add(1)
		go func() {
			defer p.handlers.Done()
			p.serve(c, l.port, true)
		}()
	}
}

// ServeConn serves conn as if it had been accepted on port, and returns
// when the connection is finished. It lets users test routes in memory,
// for example with one end of a net.Pipe, or feed connections from their
// own listeners. The client address is taken from conn.RemoteAddr; wrap
// the conn to supply another one. ServeConn takes ownership of conn.
func (p *Proxy) ServeConn(conn net.Conn, port int) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		_ = conn.Close()
		return ErrStopped
	}
	p.handlers.Add(1)
	p.mu.Unlock()
	defer p.handlers.Done()
	p.startRunner()
	p.serve(conn, port, false)
	return nil
}

func sortedPorts(m map[int]portPlan) []int {
	ports := make([]int, 0, len(m))
	for port := range m {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	return ports
}
