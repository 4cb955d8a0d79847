//go:build linux

package smartproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startPortProxy is newPortProxy with the engine chosen and Start; it
// checks that event loops serve the port when the engine was asked for.
func startPortProxy(t *testing.T, opts Options, port int, be *backend) *Proxy {
	t.Helper()
	p := newPortProxy(t, opts, port, be)
	require.NoError(t, p.Start(context.Background()))
	require.Equal(t, opts.Engine == EngineEventLoop, servedByEngine(p, port), "served by event loops")
	return p
}

// Two event-loop proxies with ReusePort share a port (as two processes
// would: the kernel's reuseport group spans processes of one user), and so
// do an event-loop proxy and a goroutine-path one; stopping either leaves
// the other serving.
func TestEngineReusePortShared(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		a, b Engine
	}{
		{"two engines", EngineEventLoop, EngineEventLoop},
		{"engine and goroutines", EngineEventLoop, EngineGoroutines},
		{"goroutines and engine", EngineGoroutines, EngineEventLoop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := closedPort(t)
			a := startPortProxy(t, Options{ReusePort: true, Engine: tc.a}, port, tagBackend(t, "a"))
			b := startPortProxy(t, Options{ReusePort: true, Engine: tc.b}, port, tagBackend(t, "b"))
			seen := tagsSeen(t, port, 64)
			require.Positive(t, seen["a"], "proxy a got no connection: %v", seen)
			require.Positive(t, seen["b"], "proxy b got no connection: %v", seen)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, b.Stop(ctx))
			require.Equal(t, map[string]int{"a": 32}, tagsSeen(t, port, 32), "after b stopped, a takes every connection")
			requireNoRecords(t, a)
		})
	}
}

// Without ReusePort a port another proxy holds is refused, on the engine
// as on the goroutine path, not silently shared with it.
func TestEngineReusePortOffPortTaken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		first Options
	}{
		{"held by an engine", Options{Engine: EngineEventLoop}},
		{"held by an engine sharing", Options{Engine: EngineEventLoop, ReusePort: true}},
		{"held by goroutines sharing", Options{Engine: EngineGoroutines, ReusePort: true}},
		{"held by goroutines", Options{Engine: EngineGoroutines}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := closedPort(t)
			be := tagBackend(t, "x")
			startPortProxy(t, tc.first, port, be)
			second := newPortProxy(t, Options{Engine: EngineEventLoop}, port, be)
			err := second.Start(context.Background())
			require.ErrorIs(t, err, syscall.EADDRINUSE)
			require.Equal(t, map[string]int{"x": 4}, tagsSeen(t, port, 4), "the first proxy still serves")
		})
	}
}

// enginePortFree does not count what a closed listener leaves behind
// (TIME_WAIT connections): a proxy restarted on its port starts again.
func TestEngineRestartOnSamePort(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	be := tagBackend(t, "x")
	p := startPortProxy(t, Options{Engine: EngineEventLoop}, port, be)
	require.Equal(t, map[string]int{"x": 8}, tagsSeen(t, port, 8))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Stop(ctx))
	startPortProxy(t, Options{Engine: EngineEventLoop}, port, be)
	require.Equal(t, map[string]int{"x": 4}, tagsSeen(t, port, 4))
}

// reusePortChildEnv carries the port (and the engine, after a comma) to the
// child process of TestReusePortSecondProcess.
const reusePortChildEnv = "SMARTPROXY_TEST_REUSEPORT_CHILD"

// A proxy in a second process (this test binary run again) shares the port
// with ReusePort, on either data path; when that process stops, this one
// takes every connection.
func TestReusePortSecondProcess(t *testing.T) {
	t.Parallel()
	for name, engine := range map[string]Engine{"goroutines": EngineGoroutines, "eventloop": EngineEventLoop} {
		t.Run(name, func(t *testing.T) {
			port := closedPort(t)
			startPortProxy(t, Options{ReusePort: true, Engine: engine}, port, tagBackend(t, "here"))

			child := exec.Command(os.Args[0], "-test.run=^TestReusePortChildProcess$", "-test.count=1")
			child.Env = append(os.Environ(), reusePortChildEnv+"="+strconv.Itoa(port)+","+strconv.Itoa(int(engine)))
			stdin, err := child.StdinPipe()
			require.NoError(t, err)
			stdout, err := child.StdoutPipe()
			require.NoError(t, err)
			child.Stderr = os.Stderr
			require.NoError(t, child.Start())
			exited := false
			defer func() {
				if !exited {
					_ = child.Process.Kill()
					_ = child.Wait()
				}
			}()
			lines := bufio.NewScanner(stdout)
			for lines.Scan() && lines.Text() != "ready" {
			}
			require.Equal(t, "ready", lines.Text(), "the child process did not start its proxy")

			seen := tagsSeen(t, port, 64)
			require.Positive(t, seen["here"], "this process got no connection: %v", seen)
			require.Positive(t, seen["child"], "the child process got no connection: %v", seen)

			require.NoError(t, stdin.Close()) // the child stops its proxy and exits
			_, _ = io.Copy(io.Discard, stdout)
			require.NoError(t, child.Wait(), "the child process failed")
			exited = true
			require.Equal(t, map[string]int{"here": 16}, tagsSeen(t, port, 16), "after the child stopped, this process takes every connection")
		})
	}
}

// TestReusePortChildProcess is the second process of
// TestReusePortSecondProcess; run by itself it skips.
func TestReusePortChildProcess(t *testing.T) {
	var port, engine int
	if _, err := fmt.Sscanf(os.Getenv(reusePortChildEnv), "%d,%d", &port, &engine); err != nil {
		t.Skip("the child process of TestReusePortSecondProcess")
	}
	p := startPortProxy(t, Options{ReusePort: true, Engine: Engine(engine)}, port, tagBackend(t, "child"))
	_, _ = os.Stdout.WriteString("ready\n")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Stop(ctx))
}
