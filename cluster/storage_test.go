package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/acme/acmetest"
	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
)

// TestStorageContract runs the acme.Storage contract on etcd.
func TestStorageContract(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	cfg, _ := testConfig(t, "/contract", e.Endpoint())
	acmetest.TestStorage(t, dial(t, cfg).Storage())
}

// TestLockerContract runs the acme.Locker contract on etcd, each locker
// on a client (a connection) of its own as separate instances have.
func TestLockerContract(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	acmetest.TestLocker(t, func(t *testing.T) acme.Locker {
		cfg, _ := testConfig(t, "/contract", e.Endpoint())
		return dial(t, cfg).Locker()
	})
}

// TestStorageIsolation: two prefixes on one etcd see nothing of each
// other, and keys outside acme's alphabet are refused.
func TestStorageIsolation(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	cfgA, _ := testConfig(t, "/fleet/a", e.Endpoint())
	cfgAB, _ := testConfig(t, "/fleet/ab/", e.Endpoint())
	ca := dial(t, cfgA)
	a, ab := ca.Storage(), dial(t, cfgAB).Storage()
	ctx := t.Context()
	require.NoError(t, a.Store(ctx, "k", []byte("a")))
	require.NoError(t, ab.Store(ctx, "k", []byte("ab")))
	got, err := a.List(ctx, "")
	require.NoError(t, err)
	require.Equal(t, []string{"k"}, got, "prefix /fleet/a must not see /fleet/ab")
	v, err := ab.Load(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "ab", string(v))
	for _, bad := range []string{"", "/k", "k/", "a//b", "../k", "a/./b", "k\x00", "a b", "ü"} {
		require.Error(t, a.Store(ctx, bad, []byte("x")), "key %q", bad)
		_, err := a.Load(ctx, bad)
		require.Error(t, err, "key %q", bad)
		_, err = ca.Locker().Lock(ctx, bad)
		require.Error(t, err, "lock name %q", bad)
	}
}

// TestDownEtcdFailsPromptly: with etcd gone every operation fails within
// the operation timeout, and a failed Load is not "missing".
func TestDownEtcdFailsPromptly(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	cfg, _ := testConfig(t, "/down", e.Endpoint())
	cfg.OpTimeout = 500 * time.Millisecond
	c := dial(t, cfg)
	s := c.Storage()
	require.NoError(t, s.Store(t.Context(), "k", []byte("v")))
	e.Members[0].Kill(t)
	start := time.Now()
	_, err := s.Load(context.Background(), "k")
	require.Error(t, err)
	require.NotErrorIs(t, err, acme.ErrNotExist)
	require.Error(t, s.Store(context.Background(), "k", []byte("v2")))
	_, err = c.Locker().Lock(context.Background(), "order")
	require.Error(t, err)
	_, err = c.Publish(context.Background(), []byte(`{"routes": []}`))
	require.Error(t, err)
	require.Less(t, time.Since(start), 4*time.Second, "four operations of a 500 ms timeout")
}

func TestDialRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{Endpoints: []string{"http://127.0.0.1:1"}},                 // no prefix
		{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/"},    // empty prefix
		{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/a b"}, // space
		{Prefix: "/p"}, // no endpoint
		{Endpoints: []string{" "}, Prefix: "/p"},
	} {
		_, err := Dial(cfg)
		require.Error(t, err, "%+v", cfg)
	}
	_, err := TLSConfig("cert.pem", "", "")
	require.Error(t, err, "a certificate without its key")
	_, err = TLSConfig("", "", "/nonexistent/ca.pem")
	require.Error(t, err)
}

// TestTLS: an etcd that requires client certificates is reached with
// TLSConfig's settings, and refuses a client without a certificate.
func TestTLS(t *testing.T) {
	t.Parallel()
	e, files := etcdtest.StartTLS(t)
	tlsCfg, err := TLSConfig(files.CertFile, files.KeyFile, files.CAFile)
	require.NoError(t, err)
	cfg, _ := testConfig(t, "/tls", e.Endpoint())
	cfg.TLS = tlsCfg
	s := dial(t, cfg).Storage()
	require.NoError(t, s.Store(t.Context(), "k", []byte("v")))
	v, err := s.Load(t.Context(), "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))

	noCert, err := TLSConfig("", "", files.CAFile)
	require.NoError(t, err)
	cfg.TLS, cfg.OpTimeout = noCert, time.Second
	_, err = dial(t, cfg).Storage().Load(t.Context(), "k")
	require.Error(t, err, "a client without a certificate must be refused")
}
