// Quickstart starts two backends and a smartproxy in front of them, sends
// traffic through it and prints what happened:
//
//	go run ./examples/quickstart
//
// It shows a plain TCP forward, TLS passthrough routed by SNI (the proxy
// never sees the plaintext), a socket handler written in Go, and the
// connection metrics.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"time"

	"github.com/gosmartproxy/smartproxy"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	echoAddr := startEcho()
	tlsAddr, roots := startTLSBackend("api.example.com")
	tcpPort, tlsPort, lineP := freePort(), freePort(), freePort()

	p, err := smartproxy.New(smartproxy.Options{
		ListenAddress: "127.0.0.1",
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Routes: []smartproxy.Route{
			smartproxy.NewRoute("echo").Ports(tcpPort).ForwardTo(echoAddr).Route(),
			smartproxy.NewRoute("api").Ports(tlsPort).Domains("api.example.com").
				TLSPassthrough().ForwardTo(tlsAddr).Route(),
			smartproxy.NewRoute("shout").Ports(lineP).HandleWith(smartproxy.LineProtocolHandler(
				func(ctx context.Context, line string, w io.Writer, rc *smartproxy.RouteContext) error {
					_, err := fmt.Fprintf(w, "%s (connection %d, route %s)\n", strings.ToUpper(line), rc.ConnectionID, rc.RouteName)
					return err
				})).Route(),
		},
	})
	if err != nil {
		return err
	}
	if err := p.Start(context.Background()); err != nil {
		return err
	}
	defer p.Stop(context.Background())
	fmt.Printf("proxy listening on 127.0.0.1:%d (tcp forward), :%d (tls by SNI), :%d (Go handler)\n\n", tcpPort, tlsPort, lineP)

	// 1. Plain TCP forward.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort))
	if err != nil {
		return err
	}
	fmt.Fprintln(c, "hello through the proxy")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	fmt.Printf("tcp  echo      -> %s", line)

	// 2. TLS passthrough: the certificate comes from the backend.
	tc, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort), &tls.Config{ServerName: "api.example.com", RootCAs: roots})
	if err != nil {
		return err
	}
	fmt.Fprintln(tc, "ping")
	line, _ = bufio.NewReader(tc).ReadString('\n')
	fmt.Printf("tls  api       -> %s   (certificate subject %s, %s)\n", strings.TrimSpace(line),
		tc.ConnectionState().PeerCertificates[0].Subject.CommonName, tls.VersionName(tc.ConnectionState().Version))
	tc.Close()

	// 3. A socket handler: a Go function is the server.
	c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", lineP))
	if err != nil {
		return err
	}
	fmt.Fprintln(c, "hello handler")
	line, _ = bufio.NewReader(c).ReadString('\n')
	c.Close()
	fmt.Printf("tcp  handler   -> %s", line)

	time.Sleep(50 * time.Millisecond)
	m := p.Metrics()
	fmt.Printf("\nmetrics: %d connections total, %d active, %d bytes in, %d bytes out\n", m.Total, m.Active, m.BytesIn, m.BytesOut)
	return nil
}

func startEcho() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// startTLSBackend serves "pong" to every line over TLS with a fresh
// self-signed certificate for name, and returns its address and a pool
// that trusts it.
func startTLSBackend(name string) (string, *x509.CertPool) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintln(c, "pong")
				}
			}()
		}
	}()
	return ln.Addr().String(), roots
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
