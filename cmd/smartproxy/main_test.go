package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gosmartproxy/smartproxy"
)

// TestMain fails the run if a test leaves a goroutine behind: run must
// stop its proxy on every path. (goleak ignores the os/signal goroutine.)
func TestMain(m *testing.M) {
	if os.Getenv(runCLIEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stderr, nil)) // a child process of a test: startProcess
	}
	goleak.VerifyTestMain(m)
}

// syncBuffer is the CLI's stderr in tests: run writes it from its own
// goroutine while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	// Below the ephemeral range (32768-60999 here): a port taken from it
	// could meanwhile become the local port of some outgoing connection,
	// and a proxy started on it then fails with "address already in use"
	// (the fleet tests bind 127.0.0.1 to 127.0.0.3). Free on all three.
	for range 100 {
		port := 10000 + mrand.IntN(22000)
		free := true
		for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			require.NoError(t, ln.Close())
		}
		if free {
			return port
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// startEcho runs a loopback echo server until the test ends and returns
// its address.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// route is one forward route of a test config.
type route struct {
	name   string
	port   int
	target string
}

// configJSON writes a config that listens on loopback only, with the given
// routes and extra top-level settings (a JSON fragment or "").
func configJSON(extra string, routes ...route) string {
	var rs []string
	for _, r := range routes {
		host, port, _ := net.SplitHostPort(r.target)
		rs = append(rs, fmt.Sprintf(`{"name": %q, "match": {"ports": %d}, "action": {"type": "forward", "targets": [{"host": %q, "port": %s}]}}`,
			r.name, r.port, host, port))
	}
	if extra != "" {
		extra += ", "
	}
	return fmt.Sprintf(`{%s"listenAddress": "127.0.0.1", "routes": [%s]}`, extra, strings.Join(rs, ", "))
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// cli is a run of the command in the background.
type cli struct {
	p      *smartproxy.Proxy
	stderr *syncBuffer
	exit   chan int
}

// start runs the command with args and waits until it listens. The test
// must end it (SIGTERM); a run still going when the test ends is stopped
// the same way.
func start(t *testing.T, args ...string) *cli {
	t.Helper()
	c := &cli{stderr: &syncBuffer{}, exit: make(chan int, 1)}
	ready := make(chan *smartproxy.Proxy)
	go func() { c.exit <- run(args, c.stderr, ready) }()
	select {
	case c.p = <-ready:
	case code := <-c.exit:
		t.Fatalf("run exited with %d before listening:\n%s", code, c.stderr)
	case <-time.After(5 * time.Second):
		t.Fatalf("run did not start listening:\n%s", c.stderr)
	}
	t.Cleanup(func() {
		select {
		case <-c.exit:
			return // ended by the test
		default:
		}
		// Still running, so its signal handler is in place: SIGTERM
		// reaches run, not the test process.
		sendSignal(t, syscall.SIGTERM)
		select {
		case <-c.exit:
		case <-time.After(10 * time.Second):
			t.Errorf("run did not exit on SIGTERM:\n%s", c.stderr)
		}
	})
	return c
}

// sendSignal sends sig to the test process, where run's signal.Notify catches
// it. Only call it while run is serving: with no handler SIGHUP and
// SIGTERM would end the test binary.
func sendSignal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, syscall.Kill(os.Getpid(), sig))
}

// waitExit waits for run to return and gives its exit code.
func (c *cli) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case code := <-c.exit:
		c.exit <- code // for the cleanup: the run has ended
		return code
	case <-time.After(within):
		t.Fatalf("run did not exit within %v:\n%s", within, c.stderr)
		return -1
	}
}

// requireRunning fails if run returns within a short while.
func (c *cli) requireRunning(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case code := <-c.exit:
		c.exit <- code
		t.Fatalf("run exited early with %d:\n%s", code, c.stderr)
	case <-time.After(d):
	}
}

// waitLog waits until stderr contains s.
func (c *cli) waitLog(t *testing.T, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(c.stderr.String(), s) }, 5*time.Second, 5*time.Millisecond,
		"log never said %q:\n%s", s, c.stderr)
}

// dialEcho connects to the proxy's port and checks that it echoes.
func dialEcho(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(c, "ping\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ping\n", line)
	return c
}

// echoes reports whether port accepts and echoes right now.
func echoes(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "x"); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	return err == nil && b[0] == 'x'
}

// runOnce runs a command that must finish without serving (-check, usage
// errors) and returns its exit code and stderr. Should it start serving
// after all, the test fails instead of hanging.
func runOnce(t *testing.T, args ...string) (int, string) {
	t.Helper()
	stderr := &syncBuffer{}
	ready := make(chan *smartproxy.Proxy)
	exit := make(chan int, 1)
	go func() { exit <- run(args, stderr, ready) }()
	select {
	case code := <-exit:
		return code, stderr.String()
	case <-ready:
		t.Errorf("run %q started serving", args)
		sendSignal(t, syscall.SIGTERM)
		return <-exit, stderr.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("run %q did not return:\n%s", args, stderr)
		return -1, ""
	}
}

func TestCheckValid(t *testing.T) {
	dir := t.TempDir()
	echo := "127.0.0.1:9"
	t.Run("json", func(t *testing.T) {
		path := writeFile(t, dir, "ok.json", configJSON(`"gracefulShutdownTimeout": 1000`, route{"web", 8080, echo}, route{"api", 8081, echo}))
		code, stderr := runOnce(t, "-config", path, "-check")
		require.Equal(t, 0, code, stderr)
		require.Equal(t, path+": OK (2 routes)\n", stderr)
	})
	t.Run("yaml", func(t *testing.T) {
		path := writeFile(t, dir, "ok.yaml", `
listenAddress: 127.0.0.1
routes:
  - name: web
    match: {ports: [80, {from: 8000, to: 8009}]}
    action:
      type: forward
      targets: [{host: 10.0.0.1, port: preserve}]
`)
		code, stderr := runOnce(t, "-check", "-config", path)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, path+": OK (1 routes)\n", stderr)
	})
	t.Run("no routes is a warning", func(t *testing.T) {
		path := writeFile(t, dir, "empty.json", `{"routes": []}`)
		code, stderr := runOnce(t, "-check", "-config", path)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, path+": OK, but warning: no routes (the proxy would listen on no port)\n", stderr)
	})
	t.Run("check does not listen", func(t *testing.T) {
		// A port already taken is no reason for -check to fail: it does
		// not open ports.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		path := writeFile(t, dir, "busy.json", configJSON("", route{"web", ln.Addr().(*net.TCPAddr).Port, echo}))
		code, stderr := runOnce(t, "-config", path, "-check")
		require.Equal(t, 0, code, stderr)
	})
}

func TestCheckInvalid(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file, content string
		want                []string // all must appear in stderr
	}{
		{
			name: "bad port", file: "port.json",
			content: `{"routes": [{"name": "web", "match": {"ports": 70000}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 80}]}}]}`,
			want:    []string{`route "web"`, "match.ports[0]", "70000"},
		},
		{
			name: "bad target port", file: "target.json",
			content: `{"routes": [{"name": "api", "match": {"ports": 80}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 0}]}}]}`,
			want:    []string{`route "api"`, "action.targets[0].port"},
		},
		{
			name: "unknown field", file: "unknown.json",
			content: `{"routes": [{"name": "web", "match": {"portz": 80}, "action": {"type": "forward"}}]}`,
			want:    []string{`routes[0] ("web")`, `unknown field "portz"`},
		},
		{
			name: "later field", file: "later.json",
			content: `{"routes": [{"name": "web", "match": {"ports": 80}, "action": {"type": "forward"}, "security": {"authentication": {}}}]}`,
			want:    []string{`routes[0] ("web").security.authentication`, "not supported yet"},
		},
		{
			name: "later field in YAML", file: "later.yaml",
			content: "routes:\n  - name: secure\n    match: {ports: 443}\n    action: {type: forward, targets: [{host: 10.0.0.1, port: 443}]}\n    security: {authentication: {type: basic}}\n",
			want:    []string{`routes[0] ("secure").security.authentication`, "not supported yet"},
		},
		{
			name: "syntax error", file: "syntax.json",
			content: `{"routes": [`,
			want:    []string{"syntax.json", "parsing JSON"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, dir, tt.file, tt.content)
			code, stderr := runOnce(t, "-config", path, "-check")
			require.Equal(t, 1, code, stderr)
			for _, w := range tt.want {
				require.Contains(t, stderr, w)
			}
			require.NotContains(t, stderr, "smartproxy: smartproxy:", "one prefix is enough")
		})
	}
	t.Run("missing file", func(t *testing.T) {
		code, stderr := runOnce(t, "-config", filepath.Join(dir, "nope.json"), "-check")
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "nope.json")
	})
	t.Run("invalid file is refused without -check too", func(t *testing.T) {
		path := writeFile(t, dir, "run.json", `{"routes": [{"name": "web", "match": {"ports": 0}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 80}]}}]}`)
		code, stderr := runOnce(t, "-config", path)
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "match.ports[0]")
	})
}

func TestUsage(t *testing.T) {
	path := writeFile(t, t.TempDir(), "ok.json", configJSON("", route{"web", 8080, "127.0.0.1:9"}))
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing -config", nil, 2, "-config is required"},
		{"missing -config with -check", []string{"-check"}, 2, "-config is required"},
		{"unknown flag", []string{"-config", path, "-frobnicate"}, 2, "flag provided but not defined"},
		{"bad log level", []string{"-config", path, "-log-level", "loud"}, 2, "-log-level"},
		{"stray argument", []string{"-config", path, "extra.json"}, 2, `unexpected argument "extra.json"`},
		{"help", []string{"-h"}, 0, "-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := runOnce(t, tt.args...)
			require.Equal(t, tt.code, code, stderr)
			require.Contains(t, stderr, tt.want)
		})
	}
}

// TestRunForward runs the command end to end: a loopback port forwarded
// to an echo server, JSON logs, SIGTERM to finish.
func TestRunForward(t *testing.T) {
	echo := startEcho(t)
	port := freePort(t)
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON("", route{"echo", port, echo}))
	c := start(t, "-config", path, "-log-json", "-log-level", "debug")
	require.Equal(t, []int{port}, c.p.Ports())
	conn := dialEcho(t, port)
	require.NoError(t, conn.Close())

	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
	require.False(t, echoes(port), "the port must be closed after exit")

	// Every line is a JSON record.
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(c.stderr.String()), "\n") {
		var rec struct{ Msg string }
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "not JSON: %s", line)
		msgs = append(msgs, rec.Msg)
	}
	require.Contains(t, msgs, "smartproxy started")
	require.Contains(t, msgs, "connection routed", "debug level logs connections")
	require.Contains(t, msgs, "shutting down")
}

// TestReload: SIGHUP applies a new file's routes (a new port opens, a
// dropped one closes), a broken file keeps the running routes and logs
// why, and changed non-route settings are reported as needing a restart.
func TestReload(t *testing.T) {
	echo := startEcho(t)
	dir := t.TempDir()
	portA, portB := freePort(t), freePort(t)
	path := writeFile(t, dir, "proxy.json", configJSON("", route{"a", portA, echo}))
	c := start(t, "-config", path)
	// Connections are closed as soon as they have shown the route works:
	// one left open would hold the final drain for 30 s.
	require.NoError(t, dialEcho(t, portA).Close())
	require.False(t, echoes(portB))

	// Add a route on a new port.
	writeFile(t, dir, "proxy.json", configJSON("", route{"a", portA, echo}, route{"b", portB, echo}))
	sendSignal(t, syscall.SIGHUP)
	require.Eventually(t, func() bool { return echoes(portB) }, 5*time.Second, 10*time.Millisecond, "new port never answered:\n%s", c.stderr)
	require.ElementsMatch(t, []int{portA, portB}, c.p.Ports())
	require.Len(t, c.p.Routes(), 2)
	c.waitLog(t, "reloaded routes")
	require.NotContains(t, c.stderr.String(), "restart to apply")

	// A broken file: nothing changes.
	for _, broken := range []string{
		`{"routes": [`, // syntax
		`{"routes": [{"name": "a", "match": {"ports": 0}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 9}]}}]}`, // invalid
	} {
		before := strings.Count(c.stderr.String(), "reload failed")
		writeFile(t, dir, "proxy.json", broken)
		sendSignal(t, syscall.SIGHUP)
		require.Eventually(t, func() bool { return strings.Count(c.stderr.String(), "reload failed") > before }, 5*time.Second, 5*time.Millisecond,
			"no error logged:\n%s", c.stderr)
		require.ElementsMatch(t, []int{portA, portB}, c.p.Ports())
		require.NoError(t, dialEcho(t, portA).Close())
		require.NoError(t, dialEcho(t, portB).Close())
	}
	require.Contains(t, c.stderr.String(), "keeping the current routes")
	require.Contains(t, c.stderr.String(), "match.ports[0]")

	// Drop route a, and change a setting reload cannot apply.
	writeFile(t, dir, "proxy.json", configJSON(`"gracefulShutdownTimeout": 1234`, route{"b", portB, echo}))
	sendSignal(t, syscall.SIGHUP)
	require.Eventually(t, func() bool { return !echoes(portA) }, 5*time.Second, 10*time.Millisecond, "dropped port still answers")
	require.Equal(t, []int{portB}, c.p.Ports())
	c.waitLog(t, "restart to apply")
	require.NoError(t, dialEcho(t, portB).Close())

	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
}

// TestShutdownDrains: SIGTERM stops accepting at once but waits for open
// connections, then exits 0.
func TestShutdownDrains(t *testing.T) {
	echo := startEcho(t)
	port := freePort(t)
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON(`"gracefulShutdownTimeout": 10000`, route{"echo", port, echo}))
	c := start(t, "-config", path)
	conn := dialEcho(t, port)

	sendSignal(t, syscall.SIGTERM)
	c.waitLog(t, "shutting down")
	require.Eventually(t, func() bool { return !echoes(port) }, 5*time.Second, 10*time.Millisecond, "still accepting while draining")
	c.requireRunning(t, 200*time.Millisecond)
	// The open connection still works while the proxy drains.
	_, err := io.WriteString(conn, "still here\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "still here\n", line)

	require.NoError(t, conn.Close())
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
	require.Contains(t, c.stderr.String(), "stopped")
	require.NotContains(t, c.stderr.String(), "cut short")
}

// TestShutdownTimeout: connections still open after
// gracefulShutdownTimeout are closed and the exit is still 0.
func TestShutdownTimeout(t *testing.T) {
	echo := startEcho(t)
	port := freePort(t)
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON(`"gracefulShutdownTimeout": 300`, route{"echo", port, echo}))
	c := start(t, "-config", path)
	conn := dialEcho(t, port)

	begin := time.Now()
	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
	require.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond, "exited before the drain timeout")
	require.Contains(t, c.stderr.String(), "drain cut short")
	_, err := io.ReadAll(conn)
	require.NoError(t, err, "the proxy closed the connection")
}

// TestShutdownSecondSignal: a second SIGINT during the drain closes the
// remaining connections at once.
func TestShutdownSecondSignal(t *testing.T) {
	echo := startEcho(t)
	port := freePort(t)
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON(`"gracefulShutdownTimeout": 60000`, route{"echo", port, echo}))
	c := start(t, "-config", path)
	dialEcho(t, port)

	sendSignal(t, syscall.SIGINT)
	c.waitLog(t, "shutting down")
	c.requireRunning(t, 100*time.Millisecond)
	sendSignal(t, syscall.SIGHUP) // ignored while going down
	c.requireRunning(t, 100*time.Millisecond)
	sendSignal(t, syscall.SIGINT)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
	require.Contains(t, c.stderr.String(), "second signal")
	require.NotContains(t, c.stderr.String(), "reloaded routes")
}

// TestStartFails: a port that cannot be opened makes run exit 1 with the
// reason, leaving nothing running (goleak checks).
func TestStartFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	path := writeFile(t, t.TempDir(), "proxy.json", configJSON("", route{"busy", ln.Addr().(*net.TCPAddr).Port, "127.0.0.1:9"}))
	code, stderr := runOnce(t, "-config", path)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "address already in use")
}

// selfSigned writes a self-signed certificate and key for name into dir
// as cert.pem and key.pem.
func selfSigned(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
}

// runWithin is runOnce that fails the test instead of hanging when run
// does not return within d (the bugs tested with it were hangs).
func runWithin(t *testing.T, d time.Duration, args ...string) (int, string) {
	t.Helper()
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stderr := runOnce(t, args...)
		done <- result{code, stderr}
	}()
	select {
	case r := <-done:
		return r.code, r.stderr
	case <-time.After(d):
		t.Fatalf("run %q still running after %v", args, d)
		return 0, ""
	}
}

// TestCheckFiles: -check resolves relative certFile/keyFile/caFile
// against the config file's directory whatever the working directory,
// refuses a config file or certificate file that is a device (it used to
// read /dev/zero forever), and refuses numbers that would wrap around and
// trailing data.
func TestCheckFiles(t *testing.T) {
	confDir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(confDir, "tls"), 0o700))
	selfSigned(t, filepath.Join(confDir, "tls"), "a.test")
	tlsRoute := func(certFile, keyFile, caFile string) string {
		return `{"listenAddress": "127.0.0.1", "routes": [{"name": "secure", "match": {"ports": 8443},
		  "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 9443}],
		  "tls": {"mode": "terminate-and-reencrypt", "certificate": {"certFile": "` + certFile + `", "keyFile": "` + keyFile + `"},
		          "backend": {"caFile": "` + caFile + `"}}}}]}`
	}
	t.Chdir(t.TempDir()) // the config's files are not in the working directory

	t.Run("relative paths", func(t *testing.T) {
		path := writeFile(t, confDir, "rel.json", tlsRoute("tls/cert.pem", "tls/key.pem", "tls/cert.pem"))
		code, stderr := runWithin(t, 10*time.Second, "-config", path, "-check")
		require.Equal(t, 0, code, stderr)
		require.Equal(t, path+": OK (1 routes)\n", stderr)
	})
	for name, tc := range map[string]struct{ content, want string }{
		"certFile /dev/zero": {tlsRoute("/dev/zero", "tls/key.pem", "tls/cert.pem"), `route "secure": action.tls.certificate: certFile "/dev/zero": not a regular file`},
		"caFile /dev/zero":   {tlsRoute("tls/cert.pem", "tls/key.pem", "/dev/zero"), `route "secure": action.tls.backend: caFile "/dev/zero": not a regular file`},
		"missing relative":   {tlsRoute("tls/nope.pem", "tls/key.pem", "tls/cert.pem"), `certFile "` + filepath.Join(confDir, "tls", "nope.pem") + `": no such file or directory`},
		"duration overflow":  {`{"routes": [], "inactivityTimeout": 1e13}`, `inactivityTimeout: 1e13 ms overflows a duration`},
		"negative limit":     {`{"routes": [], "maxConnections": -1}`, `maxConnections: must not be negative`},
		"trailing document":  {`{"routes": []} {"routes": []}`, `data after the end of the document`},
		"host with port":     {`{"routes": [{"name": "web", "match": {"ports": 80}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1:80", "port": 80}]}}]}`, `route "web": action.targets[0].host[0]: invalid host "127.0.0.1:80": a host must not carry a port`},
	} {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(tc.content, "/dev/zero") {
				skipWithoutDevZero(t)
			}
			path := writeFile(t, confDir, strings.NewReplacer(" ", "_", "/", "_").Replace(name)+".json", tc.content)
			code, stderr := runWithin(t, 10*time.Second, "-config", path, "-check")
			require.Equal(t, 1, code, stderr)
			require.Contains(t, stderr, tc.want)
		})
	}
	t.Run("config is a device", func(t *testing.T) {
		skipWithoutDevZero(t)
		code, stderr := runWithin(t, 10*time.Second, "-config", "/dev/zero", "-check")
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, `config file "/dev/zero": not a regular file (a character device)`)
	})
}

func skipWithoutDevZero(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero here")
	}
}

// JSON logs write durations as Go duration strings, not nanoseconds.
func TestReadableDurations(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{ReplaceAttr: readableDurations}))
	log.Info("x", "timeout", 1500*time.Millisecond)
	require.Contains(t, b.String(), `"timeout":"1.5s"`)
}
