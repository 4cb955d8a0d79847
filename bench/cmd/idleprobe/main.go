// Command idleprobe explains smartproxy's memory per idle proxied
// connection from the inside: it runs the library in-process with one
// forward route to -backend (the light echo of bench/cmd/backend), opens -n
// routed connections (one byte each way), and prints the Go runtime's
// goroutines, stack and heap per connection.
//
//	idleprobe -backend 127.0.0.1:19004 -n 4000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"time"

	"github.com/gosmartproxy/smartproxy"
)

func main() {
	backend := flag.String("backend", "127.0.0.1:19004", "echo backend")
	n := flag.Int("n", 4000, "idle connections (proxy and client share this process's fds: 3 per conn)")
	port := flag.Int("port", 18099, "proxy port")
	park := flag.Duration("park", 0, "Options.IdleParkAfter (0: the default, negative: no parking)")
	settle := flag.Duration("settle", 2*time.Second, "idle time before measuring (parking needs 1-1.5x the park time)")
	flag.Parse()
	routes := []smartproxy.Route{smartproxy.NewRoute("idle").Ports(*port).ForwardTo(*backend).Route()}
	p, err := smartproxy.New(smartproxy.Options{
		Routes: routes, ListenAddress: "127.0.0.1", MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		IdleParkAfter: *park,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(context.Background())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))

	before := snapshot()
	conns := make([]net.Conn, 0, *n)
	for i := range *n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			log.Fatalf("conn %d: %v", i, err)
		}
		if _, err := c.Write([]byte{1}); err != nil {
			log.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			log.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(*settle)
	after := snapshot()
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(*n) / 1024 }
	fmt.Printf("idle proxied conns: %d (client conns live in this process too: their share is a small heap object each)\n", *n)
	fmt.Printf("goroutines per conn: %.2f\n", float64(after.g-before.g)/float64(*n))
	fmt.Printf("stack in use per conn: %.1f KiB\n", per(before.stack, after.stack))
	fmt.Printf("heap in use per conn:  %.1f KiB (after GC)\n", per(before.heap, after.heap))
	fmt.Printf("runtime Sys per conn:  %.1f KiB\n", per(before.sys, after.sys))
	for _, c := range conns {
		c.Close()
	}
}

type snap struct {
	g                int
	stack, heap, sys uint64
}

func snapshot() snap {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return snap{g: runtime.NumGoroutine(), stack: m.StackInuse, heap: m.HeapInuse, sys: m.Sys}
}
