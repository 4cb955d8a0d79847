// Command profproxy runs the smartproxy library from the same config file
// as cmd/smartproxy, in-process, with net/http/pprof on -pprof, so that a
// bench scenario can be profiled exactly as run.sh measures it:
//
//	GOMAXPROCS=1 taskset -c 1 profproxy -config bench/out/X/smartproxy.json -pprof 127.0.0.1:6060 &
//	taskset -c 0 loadgen -scenario http -addr 127.0.0.1:18080 -c 64 -duration 20s &
//	go tool pprof -top 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
//
// The pprof listener is not a proxy port; nothing is served on it unless
// asked, so it costs nothing between scrapes. -memrate sets
// runtime.MemProfileRate (0 keeps Go's default, one sample per 512 KiB).
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/gosmartproxy/smartproxy"
)

func main() {
	config := flag.String("config", "", "config file (as for cmd/smartproxy)")
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "net/http/pprof listen address (empty: none)")
	memRate := flag.Int("memrate", 0, "runtime.MemProfileRate (0: Go's default)")
	engine := flag.String("engine", "", "data path of plain TCP forwarding ports: goroutines or eventloop (Options.Engine); empty: the config's engine key, else the default (eventloop)")
	flag.Parse()
	if *memRate > 0 {
		runtime.MemProfileRate = *memRate
	}
	cfg, err := smartproxy.LoadConfig(*config)
	if err != nil {
		log.Fatal(err)
	}
	opts := cfg.Options()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	switch *engine {
	case "":
	case "goroutines":
		opts.Engine = smartproxy.EngineGoroutines
	case "eventloop":
		opts.Engine = smartproxy.EngineEventLoop
	default:
		log.Fatalf("profproxy: -engine %q: want goroutines or eventloop", *engine)
	}
	p, err := smartproxy.New(opts)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	// /debug/freeos returns every free page to the OS (a GC, then a full
	// scavenge): RSS after it is the floor of what the proxy holds, which
	// tells memory in use from memory the runtime has not given back yet.
	http.HandleFunc("/debug/freeos", func(w http.ResponseWriter, _ *http.Request) {
		debug.FreeOSMemory()
		_, _ = w.Write([]byte("ok\n"))
	})
	if *pprofAddr != "" {
		go func() { log.Fatal(http.ListenAndServe(*pprofAddr, nil)) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = p.Stop(context.Background())
}
