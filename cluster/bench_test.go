package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
)

// BenchmarkPublishToApplied measures a publish until a watcher on
// another connection has applied it: the fleet's propagation delay,
// without the proxy's own UpdateRoutes.
func BenchmarkPublishToApplied(b *testing.B) {
	e := etcdtest.Start(b, 1)
	cfg := Config{Endpoints: []string{e.Endpoint()}, Prefix: "/bench", ProbeInterval: time.Hour}
	pub, err := Dial(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	sub, err := Dial(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	applied := make(chan int64, 1)
	w := sub.NewWatcher(0, func(d Document) error { applied <- d.Revision; return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !w.Connected() {
		time.Sleep(time.Millisecond)
	}
	for i := 0; b.Loop(); i++ {
		rev, err := pub.Publish(ctx, fmt.Appendf(nil, `{"v": %d}`, i))
		if err != nil {
			b.Fatal(err)
		}
		for got := <-applied; got != rev; got = <-applied {
		}
	}
}
