// Command backend runs the benchmark backends: a TCP echo server (spliced
// io.Copy, for bulk and connection-rate runs), a light TCP echo server
// that holds no buffer and no pipe while a connection is idle (for the
// idle-RSS and max-connections runs, where the backend must hold ~20,000
// connections under a 20,000-fd cap), a TLS 1.3 echo server (ECDSA P-256)
// and an HTTP/1.1 server answering every request with a fixed 1 KiB body
// (a POST's body is read and reported back: see postHeaders), also over
// TLS 1.3 (-https).
//
//	backend -gencert DIR                 # write cert.pem, key.pem, combined.pem (for HAProxy) and exit
//	backend -cert DIR -echo 127.0.0.1:19001 -light 127.0.0.1:19004 -tls 127.0.0.1:19002 -http 127.0.0.1:19003 -https 127.0.0.1:19005
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
	"encoding/pem"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Body is the HTTP response body: 1 KiB of a fixed, checkable pattern.
// loadgen builds the same bytes (HTTPBody there) and compares every byte.
func httpBody() []byte {
	b := make([]byte, 1024)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func main() {
	gencert := flag.String("gencert", "", "write a self-signed ECDSA P-256 certificate for the bench names into DIR and exit")
	certDir := flag.String("cert", "", "directory with cert.pem and key.pem (from -gencert)")
	echoAddr := flag.String("echo", "", "TCP echo listen address (io.Copy, spliced)")
	lightAddr := flag.String("light", "", "light TCP echo listen address (no buffer held while idle)")
	tlsAddr := flag.String("tls", "", "TLS 1.3 echo listen address")
	httpAddr := flag.String("http", "", "HTTP/1.1 listen address (1 KiB bodies; a POST's body length and CRC-32 reported in headers)")
	httpsAddr := flag.String("https", "", "the same HTTP/1.1 server over TLS 1.3 (ALPN http/1.1)")
	flag.Parse()

	if *gencert != "" {
		if err := writeCert(*gencert); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *echoAddr != "" {
		go serveTCP(mustListen(*echoAddr), echoSplice)
	}
	if *lightAddr != "" {
		go serveTCP(mustListen(*lightAddr), echoLight)
	}
	if *tlsAddr != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(*certDir, "cert.pem"), filepath.Join(*certDir, "key.pem"))
		if err != nil {
			log.Fatal(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
		ln := tls.NewListener(mustListen(*tlsAddr), cfg)
		go serveTCP(ln, echoTLS)
	}
	if *httpAddr != "" {
		srv := httpServer()
		go func() { log.Fatal(srv.Serve(mustListen(*httpAddr))) }()
	}
	if *httpsAddr != "" {
		// The https scenario's direct target: the same server behind TLS 1.3
		// with ALPN http/1.1 only, as the proxies offer it.
		cert, err := tls.LoadX509KeyPair(filepath.Join(*certDir, "cert.pem"), filepath.Join(*certDir, "key.pem"))
		if err != nil {
			log.Fatal(err)
		}
		srv := httpServer()
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}
		go func() { log.Fatal(srv.ServeTLS(mustListen(*httpsAddr), "", "")) }()
	}
	fmt.Println("backend ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

// httpServer answers /forwarded with the X-Forwarded-For it got (run.sh's
// check that a proxy parses HTTP) and everything else with the 1 KiB body;
// a POST's body is read and reported first.
func httpServer() *http.Server {
	body := httpBody()
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/forwarded" {
				_, _ = io.WriteString(w, "x-forwarded-for="+r.Header.Get("X-Forwarded-For")+"\n")
				return
			}
			h := w.Header()
			if r.Method == http.MethodPost {
				if err := postHeaders(h, r); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
			}
			h["Content-Type"] = []string{"application/octet-stream"}
			h["Content-Length"] = []string{"1024"}
			_, _ = w.Write(body)
		}),
		IdleTimeout: 5 * time.Minute,
		ErrorLog:    log.New(io.Discard, "", 0),
	}
}

// postHeaders reads a POST body to its end and reports what arrived, so
// that loadgen's http-post scenario can check that the proxy forwarded the
// body it sent byte for byte without the backend echoing 16 KiB back:
// X-Body-Length (bytes read), X-Body-Crc32 (CRC-32 IEEE, 8 hex digits) and
// X-Request-Content-Length (the framing the proxy chose; -1: chunked).
func postHeaders(h http.Header, r *http.Request) error {
	crc := crc32.NewIEEE()
	n, err := io.Copy(crc, r.Body)
	if err != nil {
		return fmt.Errorf("read body after %d bytes: %w", n, err)
	}
	h["X-Body-Length"] = []string{strconv.FormatInt(n, 10)}
	h["X-Body-Crc32"] = []string{fmt.Sprintf("%08x", crc.Sum32())}
	h["X-Request-Content-Length"] = []string{strconv.FormatInt(r.ContentLength, 10)}
	return nil
}

func mustListen(addr string) net.Listener {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func serveTCP(ln net.Listener, h func(net.Conn)) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			// EMFILE and friends: back off, never spin, never exit.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go h(c)
	}
}

// echoSplice echoes with io.Copy between the same *net.TCPConn: Linux
// splices, which keeps the load core's share of bulk transfers small.
func echoSplice(c net.Conn) {
	defer c.Close()
	if _, err := io.Copy(c, c); err == nil {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
			// Wait for the peer's close so the FIN/ACK exchange completes.
			var b [1]byte
			_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = tc.Read(b[:])
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// echoLight waits for readability holding nothing, then borrows a pooled
// buffer for one non-blocking read and the write of what it got. An idle
// connection costs one goroutine and one fd.
func echoLight(c net.Conn) {
	defer c.Close()
	tc := c.(*net.TCPConn)
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	read := func(fd uintptr) bool {
		bp = bufPool.Get().(*[]byte)
		for {
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			bufPool.Put(bp)
			return false // park in the netpoller holding no buffer
		}
		return true
	}
	for {
		if err := rc.Read(read); err != nil {
			return
		}
		if rerr != nil || n <= 0 {
			bufPool.Put(bp)
			if rerr == nil && n == 0 { // EOF
				_ = tc.CloseWrite()
			}
			return
		}
		_, werr := tc.Write((*bp)[:n])
		bufPool.Put(bp)
		if werr != nil {
			return
		}
	}
}

// echoTLS echoes a TLS connection until EOF.
func echoTLS(c net.Conn) {
	defer c.Close()
	tc := c.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := tc.Handshake(); err != nil {
		return
	}
	_ = tc.SetDeadline(time.Time{})
	r := bufio.NewReaderSize(tc, 4096)
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := tc.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// Names is every name the certificate covers; the proxies route SNI
// "echo.bench.test" to the TLS echo backend.
var names = []string{"echo.bench.test", "term.bench.test", "localhost"}

func writeCert(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	for name, data := range map[string][]byte{
		"cert.pem":     certPEM,
		"key.pem":      keyPEM,
		"combined.pem": append(append([]byte{}, certPEM...), keyPEM...),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
