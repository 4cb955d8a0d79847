//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Server forwards every connection accepted on Config.Listen to Config.Target from its event
// loops. Start it with Start; Close stops it.
type Server struct {
	cfg            Config
	loops          []*loop
	addr           netip.AddrPort
	active         atomic.Int64
	in, out        atomic.Int64
	errMu          sync.Mutex
	err            error
	closeOnce      sync.Once
	halfClose      time.Duration // 0: none
	writeTimeout   time.Duration // 0: none
	tick           time.Duration // how often armed deadlines are checked
	connectTimeout time.Duration // 0: none
	sniffTimeout   time.Duration // 0: none
	sniffMax       int
	// HTTP mode's settings (0: no timeout).
	httpHead, httpIdle, httpFirst, httpResponse, httpBody, httpPoolIdle time.Duration
	httpMaxHeld, httpIdleConns                                          int
	shutting                                                            atomic.Bool
	next                                                                atomic.Uint32 // Adopt's round robin
	done                                                                chan struct{}
}

// Start opens one SO_REUSEPORT listening socket per loop on cfg.Listen (port 0 picks a free
// port, shared by all loops), or shares cfg.ListenFD among them, and starts the loops.
func Start(cfg Config) (*Server, error) {
	if cfg.SharedListen {
		defer closeFD(cfg.ListenFD) // each loop has its own dup
	}
	if !cfg.Listen.IsValid() || !cfg.Target.IsValid() && cfg.OnOpen == nil {
		return nil, errors.New("evloop: Config.Listen must be set, and Config.Target or Config.OnOpen")
	}
	n := cfg.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	s := &Server{cfg: cfg, addr: cfg.Listen,
		halfClose: orDefault(cfg.HalfCloseTimeout, DefaultHalfCloseTimeout), writeTimeout: orDefault(cfg.WriteTimeout, DefaultWriteTimeout),
		connectTimeout: orDefault(cfg.ConnectTimeout, DefaultConnectTimeout), done: make(chan struct{}),
		sniffTimeout: orDefault(cfg.SniffTimeout, DefaultSniffTimeout), sniffMax: cfg.SniffMax}
	if s.sniffMax <= 0 {
		s.sniffMax = DefaultSniffMax
	}
	s.httpHead = orDefault(cfg.HTTPHeadTimeout, DefaultHTTPHeadTimeout)
	s.httpIdle = orDefault(cfg.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	s.httpFirst = s.httpIdle
	if cfg.HTTPFirstTimeout != 0 {
		s.httpFirst = orDefault(cfg.HTTPFirstTimeout, 0)
	}
	s.httpResponse = orDefault(cfg.HTTPResponseTimeout, DefaultHTTPResponseTimeout)
	s.httpBody = s.httpResponse
	if cfg.HTTPBodyTimeout != 0 {
		s.httpBody = orDefault(cfg.HTTPBodyTimeout, 0)
	}
	s.httpPoolIdle = orDefault(cfg.HTTPPoolIdleTimeout, DefaultHTTPPoolIdle)
	s.httpMaxHeld, s.httpIdleConns = cfg.HTTPMaxHeld, cfg.HTTPIdleConns
	if s.httpMaxHeld <= 0 {
		s.httpMaxHeld = DefaultHTTPMaxHeld
	}
	if s.httpIdleConns <= 0 {
		s.httpIdleConns = DefaultHTTPIdleConns
	}
	// Deadlines fire up to a tick late: an eighth of the shorter timeout, 10 ms to 1 s.
	s.tick = time.Second
	timeouts := []time.Duration{s.halfClose, s.writeTimeout, s.connectTimeout, s.sniffTimeout}
	if cfg.OnRequest != nil {
		timeouts = append(timeouts, s.httpHead, s.httpIdle, s.httpFirst, s.httpResponse, s.httpBody, s.httpPoolIdle)
	}
	for _, t := range timeouts {
		if t > 0 {
			s.tick = min(s.tick, max(t/8, 10*time.Millisecond))
		}
	}
	for i := range n {
		l, err := newLoop(s, s.addr)
		if err != nil {
			for _, l := range s.loops {
				l.closeFDs()
			}
			return nil, err
		}
		if i == 0 && s.addr.Port() == 0 {
			sa, err := unix.Getsockname(l.lfd)
			if err != nil {
				l.closeFDs()
				return nil, fmt.Errorf("evloop: getsockname: %w", err)
			}
			s.addr = addrOf(sa, s.addr)
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		go l.run()
	}
	go func() {
		for _, l := range s.loops {
			<-l.done
		}
		close(s.done)
	}()
	return s, nil
}

// orDefault maps a Config timeout to the one used: 0 is def, negative is none (0).
func orDefault(t, def time.Duration) time.Duration {
	switch {
	case t == 0:
		return def
	case t < 0:
		return 0
	}
	return t
}

func addrOf(sa unix.Sockaddr, fallback netip.AddrPort) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return fallback
}

// Addr is the address the loops listen on.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Stats reports the connections open now and the bytes moved client->backend (in) and
// backend->client (out) so far.
func (s *Server) Stats() (active, in, out int64) {
	return s.active.Load(), s.in.Load(), s.out.Load()
}

func (s *Server) moved(dir, n int) {
	if dir == 0 {
		s.in.Add(int64(n))
	} else {
		s.out.Add(int64(n))
	}
}

func (s *Server) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Shutdown stops accepting and lets the open connections run to their end; each loop ends
// when it has none left, and Done is closed when all have. It returns once every listening
// socket is closed (as a net.Listener's Close does), so the port refuses connections from
// then on. Close still ends everything at once.
func (s *Server) Shutdown() {
	if s.shutting.Swap(true) {
		return
	}
	for _, l := range s.loops {
		l.wake()
	}
	for _, l := range s.loops {
		select { // a loop that ended (Close) closed its socket with the rest
		case <-l.unlistened:
		case <-l.done:
		}
	}
}

// Done is closed once every loop has ended (after Close, or after Shutdown and the last
// connection).
func (s *Server) Done() <-chan struct{} { return s.done }

// Close stops the loops, closes every connection and listening socket, and returns once the
// loops have ended, with the first error a loop met.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		for _, l := range s.loops {
			l.closed.Store(true)
			l.wake()
		}
		<-s.done
	})
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}
