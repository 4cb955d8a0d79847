package connection_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
)

// conn stands in for the proxied socket pair.
type conn struct{}

func (conn) Close() error { return nil }

func Example() {
	m, err := connection.NewManager(connection.Config{
		MaxConnectionsPerIP: 1,
		InactivityTimeout:   30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) }) // timeouts, sampling, pruning
	defer func() { cancel(); wg.Wait() }()

	client := netip.MustParseAddrPort("[::ffff:203.0.113.5]:51000")
	rec, err := m.Open(client, 443, conn{})
	if err != nil {
		panic(err)
	}
	if err := m.AssignRoute(rec, "web", "www.example.com", 100); err != nil {
		panic(err)
	}
	rec.AddIn(512)   // request bytes
	rec.AddOut(4096) // response bytes

	// A second connection from the same IP exceeds MaxConnectionsPerIP.
	_, err = m.Open(netip.MustParseAddrPort("203.0.113.5:51001"), 443, conn{})
	var le *connection.LimitError
	if errors.As(err, &le) {
		fmt.Println("refused:", le.Reason, le.IP)
	}

	s := m.Snapshot()
	fmt.Println("active:", s.Active, "route web:", s.ByRoute["web"], "bytes:", s.BytesIn, s.BytesOut)
	fmt.Println("client:", rec.Client(), "domain:", rec.Domain())

	m.Close(rec)
	fmt.Println("active after close:", m.Active())
	// Output:
	// refused: ip-limit 203.0.113.5
	// active: 1 route web: 1 bytes: 512 4096
	// client: 203.0.113.5:51000 domain: www.example.com
	// active after close: 0
}
