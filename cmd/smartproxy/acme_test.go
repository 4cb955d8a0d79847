package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// runCLIEnv makes the test binary run the command instead of the tests
// (TestMain), so that a test can start it as a child process with an
// environment of its own: SSL_CERT_FILE is read once per process.
const runCLIEnv = "SMARTPROXY_TEST_RUN_CLI"

// acmeConfig is a config whose one route terminates TLS for localhost on
// tlsPort with certificate "auto", ordered from Pebble.
func acmeConfig(pb *pebbletest.Server, httpPort, tlsPort int, target string) string {
	return fmt.Sprintf(`{"listenAddress": "127.0.0.1",
	  "acme": {"email": "ops@example.com", "directoryUrl": %q, "port": %d, "certificateStore": "store", "tlsAlpnChallenge": false},
	  "routes": [{"name": "site", "match": {"ports": %d, "domains": "localhost"},
	    "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": %s}], "tls": {"mode": "terminate", "certificate": "auto"}}}]}`,
		pb.DirectoryURL, httpPort, tlsPort, portOf(target))
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// TestACMEEndToEnd: a user writes certificate "auto" and an acme block
// whose directoryUrl is Pebble (trusted through SSL_CERT_FILE), starts
// the command, and a TLS client gets a certificate that chains to
// Pebble's root, with no other step; the store sits beside the config
// file and the order is logged.
func TestACMEEndToEnd(t *testing.T) {
	httpPort, tlsPort := freePort(t), freePort(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	dir := t.TempDir()
	path := writeFile(t, dir, "proxy.json", acmeConfig(pb, httpPort, tlsPort, startEcho(t)))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-config", path)
	cmd.Env = append(os.Environ(), runCLIEnv+"=1", "SSL_CERT_FILE="+pb.MinicaPEMPath)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()

	roots := pb.Roots(t)
	var conn *tls.Conn
	require.Eventually(t, func() bool {
		var err error
		conn, err = tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), &tls.Config{ServerName: "localhost", RootCAs: roots})
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "no trusted certificate:\n%s", stderr)
	defer conn.Close()
	require.Equal(t, []string{"localhost"}, conn.ConnectionState().PeerCertificates[0].DNSNames)
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := io.WriteString(conn, "ping\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ping\n", line, "through the proxy to the backend")

	entries, err := os.ReadDir(filepath.Join(dir, "store"))
	require.NoError(t, err, "the store is relative to the config file")
	require.NotEmpty(t, entries)
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), `msg="acme: certificate issued" name=localhost`) },
		5*time.Second, 10*time.Millisecond, "the event is logged:\n%s", stderr)

	require.NoError(t, conn.Close()) // nothing to drain

	// SIGHUP hands the reloaded names to the manager: without the route
	// the name is dropped (and the port closed); back again, its
	// certificate is loaded from the store, not ordered again.
	serial := conn.ConnectionState().PeerCertificates[0].SerialNumber
	config := acmeConfig(pb, httpPort, tlsPort, startEcho(t))
	writeFile(t, dir, "proxy.json", fmt.Sprintf(`{"listenAddress": "127.0.0.1", "acme": {"directoryUrl": %q, "port": %d, "certificateStore": "store", "tlsAlpnChallenge": false, "email": "ops@example.com"}, "routes": []}`, pb.DirectoryURL, httpPort))
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 20*time.Millisecond, "the route's port closes on reload:\n%s", stderr)
	writeFile(t, dir, "proxy.json", config)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), &tls.Config{ServerName: "localhost", RootCAs: roots})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(serial) == 0
	}, 10*time.Second, 20*time.Millisecond, "the stored certificate is served again:\n%s", stderr)
	require.Equal(t, 1, pb.Orders(), "no second order")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, stderr.String())
		exited <- nil
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit on SIGTERM:\n%s", stderr)
	}
}

// TestCheckACME: -check validates the acme blocks, without touching the
// network or creating the store.
func TestCheckACME(t *testing.T) {
	dir := t.TempDir()
	route := `{"name": "site", "match": {"ports": 443, "domains": "example.com"},
	  "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 8080}], "tls": {"mode": "terminate", "certificate": "auto"%s}}}`
	doc := func(acme, routeACME string) string {
		return `{"routes": [` + fmt.Sprintf(route, routeACME) + `]` + acme + `}`
	}
	path := writeFile(t, dir, "ok.json", doc(`, "acme": {"email": "ops@example.com", "useProduction": true}`, ""))
	code, stderr := runOnce(t, "-check", "-config", path)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, path+": OK (1 routes)\n", stderr)
	_, err := os.Stat(filepath.Join(dir, "certs"))
	require.ErrorIs(t, err, os.ErrNotExist, "-check creates nothing")

	path = writeFile(t, dir, "implicit.json", doc("", ""))
	code, stderr = runOnce(t, "-check", "-config", path)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "ordering certificates from Let's Encrypt staging")

	path = writeFile(t, dir, "bad.json", doc(`, "acme": {"port": 0, "directoryUrl": "http://ca"}`, `, "acme": {"challengePort": 99999}`))
	code, stderr = runOnce(t, "-check", "-config", path)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "smartproxy: "+path+": acme.port: must be a port, 1 to 65535, got 0\n")
	require.Contains(t, stderr, "smartproxy: "+path+": acme.directoryUrl: want an https URL of an ACME directory")

	yaml := "acme: {email: ops@example.com}\nroutes:\n  - name: site\n    match: {ports: 443, domains: [%s]}\n" +
		"    action: {type: forward, targets: [{host: 127.0.0.1, port: 1}], tls: {mode: terminate, certificate: auto%s}}\n"
	path = writeFile(t, dir, "bad.yaml", fmt.Sprintf(yaml, "example.com", ", acme: {challengePort: 99999}"))
	code, stderr = runOnce(t, "-check", "-config", path)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `line 5 col 132: route "site": action.tls.acme.challengePort: must be a port, 1 to 65535, got 99999`)
	path = writeFile(t, dir, "wild.yaml", fmt.Sprintf(yaml, "'*.example.com'", ""))
	code, stderr = runOnce(t, "-check", "-config", path)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `line 4 col 35: route "site": match.domains[0]: "*.example.com" is a pattern: ACME`)
}
