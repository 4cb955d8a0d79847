// Command evproxy runs the event-loop prototype (internal/evloop) as a plain TCP forwarder, so
// that bench/syscalls.sh can count its system calls and CPU per connection next to the
// smartproxy CLI and HAProxy:
//
//	evproxy -listen 127.0.0.1:18001=127.0.0.1:19001 -listen 127.0.0.1:18443=127.0.0.1:19002
//
// Each -listen forwards every connection it accepts to its target (no routing, no SNI
// parsing). It runs until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

type pairs []evloop.Config

func (p *pairs) String() string { return fmt.Sprint(*p) }

func (p *pairs) Set(v string) error {
	l, t, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want LISTEN=TARGET, got %q", v)
	}
	la, err := netip.ParseAddrPort(l)
	if err != nil {
		return err
	}
	ta, err := netip.ParseAddrPort(t)
	if err != nil {
		return err
	}
	*p = append(*p, evloop.Config{Listen: la, Target: ta})
	return nil
}

func main() {
	var ps pairs
	flag.Var(&ps, "listen", "LISTEN=TARGET address pair (repeatable)")
	loops := flag.Int("loops", 0, "event loops per listener (0: GOMAXPROCS)")
	flag.Parse()
	if len(ps) == 0 {
		log.Fatal("evproxy: no -listen")
	}
	var servers []*evloop.Server
	for _, cfg := range ps {
		cfg.Loops = *loops
		s, err := evloop.Start(cfg)
		if err != nil {
			log.Fatal(err)
		}
		servers = append(servers, s)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	for _, s := range servers {
		_ = s.Close()
	}
}
