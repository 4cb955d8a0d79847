package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// The order holder of TestOrderTakenOverAfterHolderKilled is this test
// binary run again with these variables: an instance that starts
// ordering localhost from Pebble, under the fleet's lock, and never
// answers the HTTP-01 challenge, so that it is killed mid-order.
const (
	envOrderEndpoint  = "CLUSTER_TEST_ORDER_ENDPOINT"
	envOrderPrefix    = "CLUSTER_TEST_ORDER_PREFIX"
	envOrderDirectory = "CLUSTER_TEST_ORDER_DIRECTORY"
	envOrderCA        = "CLUSTER_TEST_ORDER_CA"
	envOrderHTTPPort  = "CLUSTER_TEST_ORDER_HTTP_PORT"
)

// heldConns keeps the holder's challenge connections open (a
// connection nothing refers to is closed by its finalizer).
var heldConns []net.Conn

// orderHolder runs the order holder when the environment asks for it
// and reports whether it did: it prints "challenge" once Pebble comes to
// validate (the order lock is held then) and waits to be killed.
func orderHolder() bool {
	endpoint := os.Getenv(envOrderEndpoint)
	if endpoint == "" {
		return false
	}
	fail := func(err error) { fmt.Println("error:", err); os.Exit(1) }
	port, err := strconv.Atoi(os.Getenv(envOrderHTTPPort))
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		fail(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			heldConns = append(heldConns, c) // never answered, never closed
			fmt.Println("challenge")
		}
	}()
	pem, err := os.ReadFile(os.Getenv(envOrderCA))
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := Dial(Config{Endpoints: []string{endpoint}, Prefix: os.Getenv(envOrderPrefix), LockTTL: 2 * time.Second})
	if err != nil {
		fail(err)
	}
	m, err := acme.NewManager(acme.Config{
		Settings:   acme.Settings{DirectoryURL: os.Getenv(envOrderDirectory), HTTPPort: port, DisableTLSALPN: true},
		Storage:    c.Storage(),
		Locker:     c.Locker(),
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
	})
	if err == nil {
		err = m.Manage(context.Background(), []acme.Domain{{Name: "localhost"}})
	}
	if err == nil {
		err = m.Start(context.Background())
	}
	if err != nil {
		fail(err)
	}
	select {} // until killed
}

// TestOrderTakenOverAfterHolderKilled: an instance killed (SIGKILL)
// while it orders a certificate under the fleet's lock leaves no
// certificate and a lock that nobody releases; another instance waiting
// for the same name gets the lock once the lease runs out, finds nothing
// stored, orders the certificate itself and stores it for the fleet.
func TestOrderTakenOverAfterHolderKilled(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	httpPort := pebbletest.FreePort(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	h := startHolder(t, envOrderEndpoint+"="+e.Endpoint(), envOrderPrefix+"=/takeover",
		envOrderDirectory+"="+pb.DirectoryURL, envOrderCA+"="+pb.MinicaPEMPath, envOrderHTTPPort+"="+strconv.Itoa(httpPort))
	require.Equal(t, "challenge", h.firstLine(t, 30*time.Second),
		"the holder must reach the challenge, holding the order lock:\n%s", pb.Log())

	cfg, _ := testConfig(t, "/takeover", e.Endpoint())
	c := dial(t, cfg)
	issued := make(chan time.Time, 1)
	m, err := acme.NewManager(acme.Config{
		Settings:   acme.Settings{DirectoryURL: pb.DirectoryURL, HTTPPort: httpPort, DisableTLSALPN: true},
		Storage:    c.Storage(),
		Locker:     c.Locker(),
		HTTPClient: pb.Client,
		Logger:     cfg.Logger,
		OnEvent: func(ev acme.Event) {
			if ev.Kind == acme.EventIssued {
				select {
				case issued <- time.Now():
				default:
				}
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, m.Stop(ctx))
	})
	require.NoError(t, m.Manage(t.Context(), []acme.Domain{{Name: "localhost"}}))
	require.NoError(t, m.Start(t.Context()))
	time.Sleep(time.Second)
	require.Equal(t, 1, pb.Orders(), "the second instance must wait for the holder's lock, not order")

	h.kill(t)
	at := time.Now()
	// The challenge port is the second instance's now.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)))
	require.NoError(t, err)
	srv := &http.Server{Handler: m.HTTPHandler(http.NotFoundHandler()), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(served) }()
	t.Cleanup(func() { _ = srv.Close(); <-served })

	select {
	case when := <-issued:
		t.Logf("certificate issued to the second instance %v after the holder was killed (LockTTL %v)", when.Sub(at).Round(10*time.Millisecond), cfg.LockTTL)
	case <-time.After(60 * time.Second):
		t.Fatalf("the second instance never completed the order:\n%s", pb.Log())
	}
	require.Equal(t, 2, pb.Orders(), "the holder's order, then the second instance's")
	keys, err := c.Storage().List(t.Context(), "certificates/")
	require.NoError(t, err)
	require.NotEmpty(t, keys, "the certificate is stored for the fleet")
}
