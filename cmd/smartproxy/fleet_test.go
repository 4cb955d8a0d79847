package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/cluster"
	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
)

// process is the command running as a child process: the test binary,
// which TestMain turns into the command (runCLIEnv).
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

// startProcess runs the command with args in a child process, stopped
// with SIGTERM (then SIGKILL) when the test ends.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	return startProcessIn(t, "", nil, args...)
}

// startProcessIn is startProcess in working directory dir ("" for the
// test's) with env added to the environment.
func startProcessIn(t *testing.T, dir string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(os.Args[0], args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), runCLIEnv+"=1"), env...)
	p.cmd.Dir = dir
	p.cmd.Stderr = p.stderr
	require.NoError(t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("instance did not exit on SIGTERM:\n%s", p.stderr)
		}
		if t.Failed() {
			t.Logf("instance %v log:\n%s", args, p.stderr)
		}
	})
	return p
}

// stop sends SIGTERM and requires a clean exit (status 0) within 10 s.
func (p *process) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("instance did not stop:\n%s", p.stderr)
	}
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), p.stderr)
}

// logCount counts the log lines of p holding s.
func (p *process) logCount(s string) int { return strings.Count(p.stderr.String(), s) }

// startNamed runs a backend that writes its name to each connection and
// closes it.
func startNamed(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// answer is what addr's backend says, or "" when it cannot be reached.
func answer(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// fleetConfig is a config whose route "web" on port forwards to target,
// without a listen address (the instances give -listen).
func fleetConfig(port int, target string) string {
	host, tport, _ := net.SplitHostPort(target)
	return fmt.Sprintf(`{"routes": [{"name": "web", "match": {"ports": %d}, "action": {"type": "forward", "targets": [{"host": %q, "port": %s}]}}]}`, port, host, tport)
}

// TestFleet: a config published once reaches two running instances (the
// delay is measured); an invalid file is refused by -publish with
// nothing written, and an invalid document written to etcd directly is
// refused by the instances, which keep serving; with etcd down they keep
// serving and say so; with etcd back (same data) they follow again.
func TestFleet(t *testing.T) {
	needLoopback2(t)
	e := etcdtest.Start(t, 1)
	ep, prefix := e.Endpoint(), "/fleet-test"
	a, b := startNamed(t, "A"), startNamed(t, "B")
	port := freePort(t)
	dir := t.TempDir()
	etcdArgs := []string{"-etcd", ep, "-cluster-prefix", prefix}
	publish := func(name, content string) (int, string) {
		return runOnce(t, append([]string{"-publish", writeFile(t, dir, name, content)}, etcdArgs...)...)
	}
	code, out := publish("v1.json", fleetConfig(port, a))
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "published to /fleet-test/config as revision")

	// Two instances of one config on one host: one loopback address each.
	addrs := []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), net.JoinHostPort("127.0.0.2", strconv.Itoa(port))}
	procs := []*process{
		startProcess(t, append(etcdArgs, "-listen", "127.0.0.1")...),
		startProcess(t, append(etcdArgs, "-listen", "127.0.0.2")...),
	}
	everywhere := func(want string) bool {
		for _, addr := range addrs {
			if answer(addr) != want {
				return false
			}
		}
		return true
	}
	require.Eventually(t, func() bool { return everywhere("A") }, 15*time.Second, 10*time.Millisecond, "instances never served v1")

	// A change reaches both within a second.
	start := time.Now()
	code, out = publish("v2.json", fleetConfig(port, b))
	require.Equal(t, 0, code, out)
	published := time.Now()
	require.Eventually(t, func() bool { return everywhere("B") }, 5*time.Second, time.Millisecond, "instances never served v2")
	t.Logf("route change on both instances %v after -publish returned (%v including the -publish run)",
		time.Since(published).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	require.Less(t, time.Since(published), time.Second, "a published change must reach every instance within a second")

	c, err := cluster.Dial(cluster.Config{Endpoints: []string{ep}, Prefix: prefix})
	require.NoError(t, err)
	defer c.Close()
	current, err := c.Config(t.Context())
	require.NoError(t, err)
	require.True(t, json.Valid(current.Data))

	// Invalid files: refused by -publish, nothing written.
	for name, content := range map[string]string{
		"port0.json":  fleetConfig(0, b),
		"syntax.json": `{"routes": [`,
		"rel.json":    `{"routes": [{"name": "t", "match": {"ports": 443}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 1}], "tls": {"mode": "terminate", "certificate": {"certFile": "c.pem", "keyFile": "k.pem"}}}}]}`,
	} {
		code, out := publish(name, content)
		require.Equal(t, 1, code, "%s: %s", name, out)
		after, err := c.Config(t.Context())
		require.NoError(t, err)
		require.Equal(t, current.Revision, after.Revision, "%s: -publish wrote an invalid config", name)
	}

	// An invalid document written around -publish: the instances refuse
	// it and keep serving v2.
	_, err = c.Publish(t.Context(), []byte(fleetConfig(0, a)))
	require.NoError(t, err)
	for _, p := range procs {
		require.Eventually(t, func() bool { return p.logCount("configuration refused") == 1 }, 5*time.Second, 10*time.Millisecond, p.stderr)
	}
	require.True(t, everywhere("B"), "a refused config must leave the running routes")

	// etcd down: the instances keep serving and report it.
	e.Members[0].Kill(t)
	for _, p := range procs {
		require.Eventually(t, func() bool { return p.logCount("etcd unreachable") == 1 }, 15*time.Second, 50*time.Millisecond, p.stderr)
	}
	require.True(t, everywhere("B"), "without etcd the instances keep their routes")

	// etcd back with its data: they reconnect and follow new publishes.
	e.Members[0].Restart(t)
	for _, p := range procs {
		require.Eventually(t, func() bool { return p.logCount("etcd connected") >= 2 }, 15*time.Second, 50*time.Millisecond, p.stderr)
	}
	// YAML is published as JSON text.
	code, out = publish("v3.yaml", "routes:\n  - name: web\n    match: {ports: "+strconv.Itoa(port)+"}\n    action: {type: forward, targets: [{host: 127.0.0.1, port: "+strings.Split(a, ":")[1]+"}]}\n")
	require.Equal(t, 0, code, out)
	published = time.Now()
	require.Eventually(t, func() bool { return everywhere("A") }, 5*time.Second, time.Millisecond, "instances never served v3")
	t.Logf("after the etcd restart: route change on both instances %v after -publish returned", time.Since(published).Round(time.Millisecond))
	current, err = c.Config(t.Context())
	require.NoError(t, err)
	require.True(t, json.Valid(current.Data), "stored form is JSON: %s", current.Data)

	for _, p := range procs {
		p.stop(t)
	}
}

// TestFleetInstanceWaitsForConfig: an instance started before anything
// is published waits (logging why), refuses an invalid document, starts
// with the first valid one, and stops cleanly on SIGTERM while waiting.
func TestFleetInstanceWaitsForConfig(t *testing.T) {
	e := etcdtest.Start(t, 1)
	echo := startEcho(t)
	port := freePort(t)
	c, ready := startInstance(e.Endpoint(), "/wait")
	c.waitLog(t, "waiting for a configuration")
	cl, err := cluster.Dial(cluster.Config{Endpoints: []string{e.Endpoint()}, Prefix: "/wait"})
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.Publish(t.Context(), []byte(`{"routes": "no"}`))
	require.NoError(t, err)
	c.waitLog(t, "configuration refused; waiting for a valid one")
	_, err = cl.Publish(t.Context(), []byte(configJSON("", route{"echo", port, echo})))
	require.NoError(t, err)
	select {
	case c.p = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("never started:\n%s", c.stderr)
	}
	require.NoError(t, dialEcho(t, port).Close())
	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 10*time.Second))

	// Stopped while waiting: exit 0, nothing left running.
	c2, _ := startInstance(e.Endpoint(), "/nothing-here")
	c2.waitLog(t, "waiting for a configuration")
	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c2.waitExit(t, 10*time.Second))
	require.Contains(t, c2.stderr.String(), "stopped before a configuration was running")
}

// startInstance runs an instance in this process without waiting for it
// to listen (it may wait for a config first); ready gets its proxy.
func startInstance(ep, prefix string) (c *cli, ready chan *smartproxy.Proxy) {
	c = &cli{stderr: &syncBuffer{}, exit: make(chan int, 1)}
	ready = make(chan *smartproxy.Proxy, 1)
	go func() { c.exit <- run([]string{"-etcd", ep, "-cluster-prefix", prefix}, c.stderr, ready) }()
	return c, ready
}

func TestFleetUsage(t *testing.T) {
	path := writeFile(t, t.TempDir(), "ok.json", configJSON("", route{"web", 8080, "127.0.0.1:9"}))
	ep := []string{"-etcd", "http://127.0.0.1:1", "-cluster-prefix", "/p"}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-publish", path}, "-publish needs -etcd and -cluster-prefix"},
		{[]string{"-publish", path, "-etcd", "http://127.0.0.1:1"}, "-publish needs -etcd and -cluster-prefix"},
		{append([]string{"-publish", path, "-config", path}, ep...), "not both"},
		{append([]string{"-publish", path, "-check"}, ep...), "drop -check"},
		{append([]string{"-config", path}, ep...), "drop -config"},
		{append([]string{"-check"}, ep...), "-check validates a file"},
		{[]string{"-etcd", "http://127.0.0.1:1"}, "-etcd needs -cluster-prefix"},
		{[]string{"-config", path, "-cluster-prefix", "/p"}, "need -etcd"},
		{[]string{"-config", path, "-etcd-ca", "ca.pem"}, "need -etcd"},
		{[]string{"-config", path, "-listen", "127.0.0.1:80"}, "without a port"},
	} {
		code, stderr := runOnce(t, tt.args...)
		require.Equal(t, 2, code, "%q: %s", tt.args, stderr)
		require.Contains(t, stderr, tt.want, "%q", tt.args)
	}
	// A TLS option that cannot be loaded is an error, not a wait.
	code, stderr := runOnce(t, append([]string{"-etcd-cert", "c.pem"}, ep...)...)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "certificate and its key")
}

// TestListenOverride: -listen binds the routes on another address than
// the file's listenAddress.
func TestListenOverride(t *testing.T) {
	needLoopback2(t)
	echo := startEcho(t)
	port := freePort(t)
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON("", route{"echo", port, echo})) // listenAddress 127.0.0.1
	c := start(t, "-config", path, "-listen", "127.0.0.2")
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)), 2*time.Second)
	require.NoError(t, err, "the route must listen on -listen's address")
	require.NoError(t, conn.Close())
	require.False(t, echoes(port), "nor on the file's 127.0.0.1")
	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
}

// TestFleetTLS: -etcd-cert, -etcd-key and -etcd-ca reach an etcd that
// requires client certificates, for -publish and for an instance.
func TestFleetTLS(t *testing.T) {
	e, files := etcdtest.StartTLS(t)
	echo := startEcho(t)
	port := freePort(t)
	args := []string{"-etcd", e.Endpoint(), "-cluster-prefix", "/tls", "-etcd-cert", files.CertFile, "-etcd-key", files.KeyFile, "-etcd-ca", files.CAFile}
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON("", route{"echo", port, echo}))
	code, out := runOnce(t, append([]string{"-publish", path}, args...)...)
	require.Equal(t, 0, code, out)
	c := start(t, args...)
	require.NoError(t, dialEcho(t, port).Close())
	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 10*time.Second))
}

// needLoopback2 skips where 127.0.0.2 is not a local address (Linux
// routes all of 127/8 to loopback; macOS only 127.0.0.1).
func needLoopback2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 is not a local address here: %v", err)
	}
	_ = ln.Close()
}
