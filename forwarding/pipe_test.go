package forwarding

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proxied is one client<->proxy<->backend chain over loopback TCP with Pipe in the middle.
type proxied struct {
	client  *net.TCPConn // the real client's end
	backend *net.TCPConn // the real backend's end
	result  chan PipeResult
}

// startPipe builds a chain. wrap (optional) wraps the proxy's client-side conn before Pipe.
func startPipe(t testing.TB, ctx context.Context, opt PipeOptions, wrap func(net.Conn) net.Conn) *proxied {
	t.Helper()
	client, proxyClient := tcpPair(t)
	proxyBackend, backend := tcpPair(t)
	var pc net.Conn = proxyClient
	if wrap != nil {
		pc = wrap(pc)
	}
	p := &proxied{client: client, backend: backend, result: make(chan PipeResult, 1)}
	go func() { p.result <- Pipe(ctx, pc, proxyBackend, opt) }()
	t.Cleanup(func() {
		client.Close()
		backend.Close()
		p.wait(t, 5*time.Second)
	})
	return p
}

// wait returns Pipe's result, failing the test if Pipe does not return in time. The result
// is put back so later waits (e.g. in Cleanup) see it too.
func (p *proxied) wait(t testing.TB, d time.Duration) PipeResult {
	t.Helper()
	select {
	case r := <-p.result:
		p.result <- r
		return r
	case <-time.After(d):
		t.Fatalf("Pipe did not return within %v", d)
		return PipeResult{}
	}
}

// sendAndHash writes n random bytes to w, then half-closes, and returns their hash.
func sendAndHash(w *net.TCPConn, n int) ([32]byte, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		chunk := buf[:min(len(buf), left)]
		rand.Read(chunk)
		h.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return [32]byte{}, err
		}
		left -= len(chunk)
	}
	return [32]byte(h.Sum(nil)), w.CloseWrite()
}

// readAndHash reads r to EOF and returns the byte count and hash.
func readAndHash(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return n, [32]byte(h.Sum(nil)), err
}

// bulkBothWays pushes up and down bytes through p at the same time and verifies them.
func bulkBothWays(t *testing.T, p *proxied, up, down int) {
	t.Helper()
	type side struct {
		sent, recv [32]byte
		n          int64
		err        error
	}
	run := func(c *net.TCPConn, send int) *side {
		s := &side{}
		var wg sync.WaitGroup
		wg.Go(func() {
			var err error
			if s.sent, err = sendAndHash(c, send); err != nil {
				s.err = err
			}
		})
		var err error
		s.n, s.recv, err = readAndHash(c)
		wg.Wait()
		if s.err == nil {
			s.err = err
		}
		return s
	}
	var cs, bs *side
	var wg sync.WaitGroup
	wg.Go(func() { bs = run(p.backend, down) })
	cs = run(p.client, up)
	wg.Wait()
	if cs.err != nil || bs.err != nil {
		t.Fatalf("client err %v, backend err %v", cs.err, bs.err)
	}
	if bs.n != int64(up) || bs.recv != cs.sent {
		t.Fatalf("backend got %d bytes (want %d), hash match %v", bs.n, up, bs.recv == cs.sent)
	}
	if cs.n != int64(down) || cs.recv != bs.sent {
		t.Fatalf("client got %d bytes (want %d), hash match %v", cs.n, down, cs.recv == bs.sent)
	}
}

func TestPipeBulkExactCounts(t *testing.T) {
	const up, down = 5<<20 + 123, 3<<20 + 7
	var onC2B, onB2C atomic.Int64
	opt := PipeOptions{OnData: func(d Direction, n int) {
		if d == ClientToBackend {
			onC2B.Add(int64(n))
		} else {
			onB2C.Add(int64(n))
		}
	}}
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", nil},
		{"peekconn", func(c net.Conn) net.Conn { return NewPeekConn(c) }},
		{"hidden-tcp", func(c net.Conn) net.Conn { return opaqueConn{c} }}, // forces the buffered copy
	} {
		t.Run(tc.name, func(t *testing.T) {
			onC2B.Store(0)
			onB2C.Store(0)
			p := startPipe(t, context.Background(), opt, tc.wrap)
			bulkBothWays(t, p, up, down)
			r := p.wait(t, 5*time.Second)
			if r.Err != nil || r.ClientToBackend != up || r.BackendToClient != down {
				t.Fatalf("result %+v, want %d/%d and no error", r, up, down)
			}
			if onC2B.Load() != up || onB2C.Load() != down {
				t.Fatalf("OnData saw %d/%d", onC2B.Load(), onB2C.Load())
			}
		})
	}
}

// opaqueConn hides the concrete conn type (no Unwrap), like a metering wrapper would.
type opaqueConn struct{ net.Conn }

func (c opaqueConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func TestPipeHalfCloseRequestResponse(t *testing.T) {
	p := startPipe(t, context.Background(), PipeOptions{}, nil)
	req := []byte("request: please answer after my EOF")
	resp := bytes.Repeat([]byte("response "), 100000)
	go func() {
		got, err := io.ReadAll(p.backend) // only returns at the client's EOF
		if err != nil || !bytes.Equal(got, req) {
			p.backend.Close()
			return
		}
		p.backend.Write(resp)
		p.backend.Close()
	}()
	if _, err := p.client.Write(req); err != nil {
		t.Fatal(err)
	}
	p.client.CloseWrite()
	got, err := io.ReadAll(p.client)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client got %d bytes (want %d), %v", len(got), len(resp), err)
	}
	r := p.wait(t, 5*time.Second)
	if r.Err != nil || r.ClientToBackend != int64(len(req)) || r.BackendToClient != int64(len(resp)) {
		t.Fatalf("result %+v", r)
	}
}

func TestPipeBackendResetClosesClient(t *testing.T) {
	p := startPipe(t, context.Background(), PipeOptions{}, nil)
	// Move a byte so the path is fully set up, then reset the backend side.
	p.client.Write([]byte("x"))
	if _, err := io.ReadFull(p.backend, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	p.backend.SetLinger(0)
	p.backend.Close()
	p.client.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := p.client.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read after backend RST: %v, want EOF or reset", err)
	}
	r := p.wait(t, 3*time.Second)
	if !errors.Is(r.Err, syscall.ECONNRESET) {
		t.Fatalf("Err = %v, want ECONNRESET", r.Err)
	}
}

func TestPipeContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := startPipe(t, ctx, PipeOptions{}, nil)
	p.client.Write([]byte("ping"))
	io.ReadFull(p.backend, make([]byte, 4))
	cancel()
	r := p.wait(t, 2*time.Second)
	if !errors.Is(r.Err, context.Canceled) || r.ClientToBackend != 4 {
		t.Fatalf("result %+v", r)
	}
	p.client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := p.client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client conn still open after cancel")
	}
	p.backend.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := p.backend.Read(make([]byte, 1)); err == nil {
		t.Fatal("backend conn still open after cancel")
	}
}

func TestPipeHalfCloseTimeout(t *testing.T) {
	t.Run("idle half-closed is cut", func(t *testing.T) {
		p := startPipe(t, context.Background(), PipeOptions{HalfCloseTimeout: 200 * time.Millisecond}, nil)
		start := time.Now()
		p.client.CloseWrite()
		if _, err := io.ReadAll(p.backend); err != nil { // sees EOF; then stays silent
			t.Fatal(err)
		}
		r := p.wait(t, 3*time.Second)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("cut after %v, before the timeout", d)
		}
		if r.Err == nil {
			t.Fatal("want a timeout error")
		}
		p.client.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := p.client.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("client read: %v, want EOF", err)
		}
	})
	t.Run("active half-closed is not cut", func(t *testing.T) {
		p := startPipe(t, context.Background(), PipeOptions{HalfCloseTimeout: 300 * time.Millisecond}, nil)
		p.client.CloseWrite()
		go func() {
			io.ReadAll(p.backend)
			for range 10 { // 1s in total, well past the timeout, but never idle for long
				p.backend.Write([]byte("tick\n"))
				time.Sleep(100 * time.Millisecond)
			}
			p.backend.Close()
		}()
		got, err := io.ReadAll(p.client)
		if err != nil || string(got) != string(bytes.Repeat([]byte("tick\n"), 10)) {
			t.Fatalf("got %q, %v", got, err)
		}
		if r := p.wait(t, 3*time.Second); r.Err != nil || r.BackendToClient != 50 {
			t.Fatalf("result %+v", r)
		}
	})
}

func TestPipeNetPipeFallback(t *testing.T) {
	c1, c2 := net.Pipe()
	b1, b2 := net.Pipe()
	before := spliceCount()
	res := make(chan PipeResult, 1)
	go func() { res <- Pipe(context.Background(), c2, b1, PipeOptions{}) }()
	msg := bytes.Repeat([]byte("net.Pipe "), 20000)
	go func() { c1.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(b2, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("client->backend: %v", err)
	}
	go func() { b2.Write([]byte("pong")) }()
	if _, err := io.ReadFull(c1, got[:4]); err != nil || string(got[:4]) != "pong" {
		t.Fatalf("backend->client: %q %v", got[:4], err)
	}
	// net.Pipe cannot half-close: EOF from the client ends the whole Pipe.
	c1.Close()
	var r PipeResult
	select {
	case r = <-res:
	case <-time.After(3 * time.Second):
		t.Fatal("Pipe did not return")
	}
	b2.Close()
	if r.Err != nil || r.ClientToBackend != int64(len(msg)) || r.BackendToClient != 4 {
		t.Fatalf("result %+v", r)
	}
	if spliceCount() != before {
		t.Fatal("splice path taken for net.Pipe")
	}
}

// Reading a TLS conn (also beneath a PeekConn) uses 16 KiB buffers, one record's worth;
// anything else the 32 KiB ones.
func TestBufPoolFor(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tc := tls.Server(a, &tls.Config{})
	for _, tc := range []struct {
		name string
		c    net.Conn
		want *sync.Pool
	}{
		{"tls", tc, &tlsBufPool},
		{"peek over tls", NewPeekConn(tc), &tlsBufPool},
		{"pipe", a, &copyBufPool},
		{"peek over pipe", NewPeekConn(a), &copyBufPool},
	} {
		if got := bufPoolFor(tc.c); got != tc.want {
			t.Errorf("%s: wrong pool", tc.name)
		}
	}
	if n := len(*tlsBufPool.Get().(*[]byte)); n != 16<<10 {
		t.Fatalf("tls buffers are %d bytes", n)
	}
}
