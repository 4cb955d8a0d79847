package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/cluster"
	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
)

// TestFleetAdmin: a fleet instance's admin API (from the published
// config's admin block) reports the revision it runs in /metrics and is
// ready only while it reaches etcd; with etcd gone /readyz says 503 while
// the proxy keeps serving, and it is ready again once etcd is back.
func TestFleetAdmin(t *testing.T) {
	e := etcdtest.Start(t, 1)
	ep, prefix := e.Endpoint(), "/fleet-admin"
	backend := startNamed(t, "A")
	port, adminPort := freePort(t), freePort(t)
	doc := strings.TrimSuffix(fleetConfig(port, backend), "}") +
		fmt.Sprintf(`, "listenAddress": "127.0.0.1", "admin": {"listen": "127.0.0.1:%d"}}`, adminPort)
	cl, err := cluster.Dial(cluster.Config{Endpoints: []string{ep}, Prefix: prefix})
	require.NoError(t, err)
	rev, err := cl.Publish(t.Context(), []byte(doc))
	require.NoError(t, err)
	require.NoError(t, cl.Close())

	startProcess(t, "-etcd", ep, "-cluster-prefix", prefix)
	base := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	require.Eventually(t, func() bool { c, _ := get("/readyz"); return c == http.StatusOK }, 15*time.Second, 50*time.Millisecond)
	require.Equal(t, "A", answer(fmt.Sprintf("127.0.0.1:%d", port)))
	_, metrics := get("/metrics")
	require.Contains(t, metrics, fmt.Sprintf("smartproxy_cluster_config_revision %d", rev))
	require.Contains(t, metrics, "smartproxy_cluster_connected 1")

	e.Members[0].Kill(t)
	require.Eventually(t, func() bool { c, _ := get("/readyz"); return c == http.StatusServiceUnavailable }, 20*time.Second, 100*time.Millisecond)
	require.Equal(t, "A", answer(fmt.Sprintf("127.0.0.1:%d", port)), "an instance cut off from etcd keeps serving")
	_, metrics = get("/metrics")
	require.Contains(t, metrics, "smartproxy_cluster_connected 0")

	e.Members[0].Restart(t)
	require.Eventually(t, func() bool { c, _ := get("/readyz"); return c == http.StatusOK }, 20*time.Second, 100*time.Millisecond)
}
