package main

import (
	"crypto/tls"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// TestFleetACMEOneOrder: three instances of a fleet start at the same
// moment with a published route whose certificate is "auto"; each serves
// a certificate for localhost that chains to Pebble's root, all the same
// one, and Pebble saw exactly one order: the instances share the ACME
// store and order lock in etcd. Each instance runs in a working directory
// of its own, so instances that fell back to the file store (relative
// "certs") would each order their own certificate and the count would be
// three.
func TestFleetACMEOneOrder(t *testing.T) {
	needLoopback2(t)
	e := etcdtest.Start(t, 1)
	// AlwaysValid: Pebble validates no challenge, so the test is about the
	// one order, not about which instance answers HTTP-01.
	pb := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	ep, prefix := e.Endpoint(), "/fleet-acme"
	etcdArgs := []string{"-etcd", ep, "-cluster-prefix", prefix}
	httpPort, tlsPort := freePort(t), freePort(t)
	config := fmt.Sprintf(`{"acme": {"email": "ops@example.com", "directoryUrl": %q, "port": %d, "tlsAlpnChallenge": false},
	  "routes": [{"name": "site", "match": {"ports": %d, "domains": "localhost"},
	    "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": %s}], "tls": {"mode": "terminate", "certificate": "auto"}}}]}`,
		pb.DirectoryURL, httpPort, tlsPort, portOf(startEcho(t)))
	code, out := runOnce(t, append([]string{"-publish", writeFile(t, t.TempDir(), "acme.json", config)}, etcdArgs...)...)
	require.Equal(t, 0, code, out)

	hosts := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	procs := make([]*process, len(hosts))
	start := time.Now()
	for i, host := range hosts { // as close to the same moment as processes allow
		// SSL_CERT_FILE: the instances trust Pebble's API through the
		// system roots, read once per process.
		procs[i] = startProcessIn(t, t.TempDir(), []string{"SSL_CERT_FILE=" + pb.MinicaPEMPath}, append(etcdArgs, "-listen", host)...)
	}

	roots := pb.Roots(t)
	serials := make([]*big.Int, len(hosts))
	for i, host := range hosts {
		require.Eventually(t, func() bool {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", net.JoinHostPort(host, strconv.Itoa(tlsPort)),
				&tls.Config{ServerName: "localhost", RootCAs: roots})
			if err != nil {
				return false
			}
			defer c.Close()
			leaf := c.ConnectionState().PeerCertificates[0]
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" {
				return false
			}
			serials[i] = leaf.SerialNumber
			return true
		}, 60*time.Second, 50*time.Millisecond, "instance %s never served a certificate from Pebble:\n%s", host, procs[i].stderr)
	}
	t.Logf("all %d instances serve a Pebble certificate %v after they started", len(hosts), time.Since(start).Round(time.Millisecond))

	require.Equal(t, 1, pb.Orders(), "the fleet must order the certificate once")
	for i := range hosts[1:] {
		require.Zero(t, serials[0].Cmp(serials[i+1]), "instances %s and %s serve different certificates (%x, %x)",
			hosts[0], hosts[i+1], serials[0], serials[i+1])
	}
	for _, p := range procs {
		p.stop(t)
	}
}
