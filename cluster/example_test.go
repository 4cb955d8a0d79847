package cluster_test

import (
	"context"
	"fmt"
	"log"
	"os/signal"
	"syscall"

	"github.com/gosmartproxy/smartproxy/cluster"
)

// An instance of a fleet follows the published configuration; apply is
// where a proxy parses it and calls UpdateRoutes. (Not run: it needs an
// etcd at the address.)
func Example() {
	c, err := cluster.Dial(cluster.Config{
		Endpoints: []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"},
		Prefix:    "/smartproxy/prod",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	w := c.NewWatcher(0, func(d cluster.Document) error {
		fmt.Printf("revision %d: %d bytes of JSON\n", d.Revision, len(d.Data))
		return nil // an error refuses the document and keeps what runs
	})
	go func() { _ = w.Run(ctx) }()

	// Elsewhere, after validating the document:
	if _, err := c.Publish(ctx, []byte(`{"routes": []}`)); err != nil {
		log.Print(err)
	}
	// The ACME manager's store and order lock:
	storage, locker := c.Storage(), c.Locker()
	_, _ = storage, locker
	<-ctx.Done()
}
