//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Server forwards every connection accepted on Config.Listen to Config.Target from its event
// loops. Start it with Start; Close stops it.
type Server struct {
	cfg          Config
	loops        []*loop
	addr         netip.AddrPort
	active       atomic.Int64
	in, out      atomic.Int64
	acceptErrors atomic.Int64
	errMu        sync.Mutex
	err          error
	closeOnce    sync.Once
}

// Start opens one SO_REUSEPORT listening socket per loop on cfg.Listen (port 0 picks a free
// port, shared by all loops) and starts the loops.
func Start(cfg Config) (*Server, error) {
	if !cfg.Listen.IsValid() || !cfg.Target.IsValid() {
		return nil, errors.New("evloop: Config.Listen and Config.Target must be set")
	}
	n := cfg.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	s := &Server{cfg: cfg, addr: cfg.Listen}
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
	return s, nil
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

// Close stops the loops, closes every connection and listening socket, and returns once the
// loops have ended, with the first error a loop met.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		for _, l := range s.loops {
			l.closed.Store(true)
			var one [8]byte
			one[0] = 1 // eventfd counters are host-endian; 1 in either byte order is non-zero
			_, _ = unix.Write(l.wakefd, one[:])
		}
		for _, l := range s.loops {
			<-l.done
		}
	})
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}
