package main

// The HTTP scenarios, all HTTP/1.1 keep-alive with -c connections, each a
// closed loop of one request at a time:
//
//	http       GET /1k, 1 KiB response
//	http-post  POST /post with a 16 KiB body (Content-Length), 1 KiB response;
//	           the backend reports the body's length and CRC-32 in headers
//	https      GET /1k over TLS 1.3 terminated by the proxy (ALPN http/1.1);
//	           connections are kept, so the handshake is paid once per
//	           connection and the note says how many requests each carried
//
// Every response is checked: status 200, the 1 KiB body byte for byte, and
// for http-post the backend's report of the body it received.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var (
	get    = flag.String("get", "", "http scenarios: send one GET for this path over the scenario's transport, print the response body and exit (run.sh's check that a proxy parses HTTP)")
	cipher = flag.String("cipher", "", "https: the TLS 1.3 cipher suite every connection must negotiate, e.g. TLS_AES_128_GCM_SHA256 (empty: any)")
)

// httpBody is the backend's 1 KiB response body (the same pattern as
// bench/cmd/backend builds).
func httpBody() []byte {
	b := make([]byte, 1024)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

const (
	postBodyLen = 16 << 10
	// postVariants is how many different bodies are sent: prime, so that the
	// next request on a connection and the same request on a neighbouring
	// worker carry different bytes, and a body delivered to the wrong
	// request shows up as a CRC mismatch.
	postVariants = 61
)

// postReq is one whole POST request (head and body, written at once) and
// the CRC-32 the backend must report for its body.
type postReq struct {
	wire []byte
	crc  string
}

// postRequests builds the http-post requests: bodies are windows of one
// pseudo-random block at different offsets.
func postRequests() []postReq {
	blk := streamBlock(17)
	head := fmt.Sprintf("POST /post HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: loadgen\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", postBodyLen)
	out := make([]postReq, postVariants)
	for i := range out {
		body := blk[i*4099 : i*4099+postBodyLen]
		out[i] = postReq{
			wire: append([]byte(head), body...),
			crc:  fmt.Sprintf("%08x", crc32.ChecksumIEEE(body)),
		}
	}
	return out
}

// httpDialer opens the scenario's connections: plain TCP, or TLS 1.3 with
// ALPN http/1.1 for https, verified against -ca.
type httpDialer struct {
	tls *tls.Config // nil: cleartext
}

func newHTTPDialer() (*httpDialer, error) {
	if *scenario != "https" {
		return &httpDialer{}, nil
	}
	cfg, err := tlsConfig()
	if err != nil {
		return nil, err
	}
	// Offered by every browser and curl; all three proxies select it, which
	// also proves the TLS port is served by their HTTP layer.
	cfg.NextProtos = []string{"http/1.1"}
	return &httpDialer{tls: cfg}, nil
}

func (d *httpDialer) dial() (net.Conn, error) {
	raw, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if d.tls == nil {
		return raw, nil
	}
	c := tls.Client(raw, d.tls)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	st := c.ConnectionState()
	switch {
	case st.Version != tls.VersionTLS13:
		err = fmt.Errorf("negotiated %x, want TLS 1.3", st.Version)
	case st.NegotiatedProtocol != "http/1.1":
		err = fmt.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
	case *cipher != "" && tls.CipherSuiteName(st.CipherSuite) != *cipher:
		err = fmt.Errorf("cipher suite %s, want %s", tls.CipherSuiteName(st.CipherSuite), *cipher)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// httpConn is a worker's keep-alive connection.
type httpConn struct {
	c    net.Conn
	br   *bufio.Reader
	body []byte
}

func (h *httpConn) drop() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

// readResponse reads one response and checks it: status 200, exactly the
// 1 KiB body want, and for a POST (wantCRC set) the backend's report of the
// body it received. It returns whether the server asked to close.
func (h *httpConn) readResponse(want []byte, wantCRC string) (closeAsked bool, err error) {
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return false, fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %d", resp.StatusCode)
	}
	if wantCRC != "" {
		hd := resp.Header
		n, cl, crc := hd.Get("X-Body-Length"), hd.Get("X-Request-Content-Length"), hd.Get("X-Body-Crc32")
		if n != strconv.Itoa(postBodyLen) || cl != n || crc != wantCRC {
			return false, fmt.Errorf("backend got a body of %q bytes (Content-Length %q, CRC-32 %q), sent %d (CRC-32 %s)",
				n, cl, crc, postBodyLen, wantCRC)
		}
	}
	if _, err := io.ReadFull(resp.Body, h.body); err != nil {
		return false, fmt.Errorf("read body: %w", err)
	}
	var extra [1]byte
	if n, _ := resp.Body.Read(extra[:]); n != 0 {
		return false, errors.New("body longer than 1 KiB")
	}
	if !bytes.Equal(h.body, want) {
		return false, errors.New("body mismatch")
	}
	return resp.Close, nil
}

// runHTTP runs the http, http-post and https scenarios. A connection the
// server closes politely (Connection: close) is reopened and counted in the
// note; after any other failure (an error) it is reopened too.
func runHTTP(res *Result) error {
	d, err := newHTTPDialer()
	if err != nil {
		return err
	}
	want := httpBody()
	getReq := []byte("GET /1k HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: loadgen\r\n\r\n")
	var posts []postReq
	if *scenario == "http-post" {
		posts = postRequests()
	}
	var reconnects, dials, early, served atomic.Int64
	connect := func(h *httpConn) error {
		c, err := d.dial()
		if err != nil {
			return err
		}
		dials.Add(1)
		h.c, h.br = c, bufio.NewReaderSize(c, 8192)
		return nil
	}
	// Connections are opened before the warm-up starts, so that no TLS
	// handshake falls into the measured window however short it is; a
	// connection that fails here is dialled again (and counted) by op.
	var conns []*httpConn // closed at the end; init runs before any worker starts
	init := func(w *worker) {
		h := &httpConn{body: make([]byte, len(want))}
		if connect(h) == nil {
			early.Add(1)
		}
		w.state = h
		conns = append(conns, h)
	}
	op := func(w *worker) error {
		h := w.state.(*httpConn)
		if h.c == nil {
			if err := connect(h); err != nil {
				return err
			}
		}
		req, wantCRC := getReq, ""
		if posts != nil {
			w.seq++
			p := posts[(uint64(w.id)*7+w.seq)%postVariants]
			req, wantCRC = p.wire, p.crc
		}
		_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := h.c.Write(req); err != nil {
			h.drop()
			return fmt.Errorf("write request: %w", err)
		}
		closeAsked, err := h.readResponse(want, wantCRC)
		if err != nil {
			h.drop() // the stream's position is unknown: never reuse it
			return err
		}
		served.Add(1)
		if closeAsked {
			h.drop()
			reconnects.Add(1)
		}
		return nil
	}
	err = runClosedLoopInit(res, "req/s", init, op)
	for _, h := range conns {
		h.drop()
	}
	if err != nil {
		return err
	}
	var notes []string
	if n := reconnects.Load(); n > 0 {
		notes = append(notes, fmt.Sprintf("server closed keep-alive connections %d times (reopened)", n))
	}
	if *scenario == "https" && dials.Load() > 0 {
		notes = append(notes, fmt.Sprintf("%d TLS connections (full handshakes; %d opened before the warm-up) for %d requests, warm-up included: %.0f requests per connection",
			dials.Load(), early.Load(), served.Load(), float64(served.Load())/float64(dials.Load())))
	}
	if len(notes) > 0 {
		res.Note = strings.Join(notes, "; ")
	}
	return nil
}

// probe sends one GET for path over the scenario's transport, prints the
// response body and returns the exit status: 0 for a 200.
func probe(path string) int {
	d, err := newHTTPDialer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	c, err := d.dial()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n", path); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: write:", err)
		return 1
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: read response:", err)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: read body:", err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "loadgen: status", resp.StatusCode)
		return 1
	}
	return 0
}
