//go:build linux

package evloop

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// frameStream is a Stream for tests: the wire carries frames of one length byte and that
// many bytes XORed with 0x5a; a frame of length 0 ends the stream. Read decodes whole frames
// only (a frame cut between reads waits for the rest), as TLS records are.
type frameStream struct {
	wire  []byte // fed and not decoded
	plain []byte // decoded and not read
	ended bool
}

func (s *frameStream) Feed(b []byte) { s.wire = append(s.wire, b...) }

func (s *frameStream) Read(p []byte) (int, error) {
	for len(s.plain) == 0 {
		if s.ended {
			return 0, io.EOF
		}
		if len(s.wire) == 0 || len(s.wire) < 1+int(s.wire[0]) {
			return 0, ErrWouldBlock
		}
		n := int(s.wire[0])
		if n == 0 {
			s.ended = true
			continue
		}
		for _, b := range s.wire[1 : 1+n] {
			s.plain = append(s.plain, b^0x5a)
		}
		s.wire = s.wire[1+n:]
	}
	n := copy(p, s.plain)
	s.plain = s.plain[n:]
	return n, nil
}

func (s *frameStream) Encode(dst, p []byte) ([]byte, error) { return frame(dst, p), nil }

func (s *frameStream) End(dst []byte) []byte { return append(dst, 0) }

// frame appends p to dst as frames of up to 100 bytes.
func frame(dst, p []byte) []byte {
	for len(p) > 0 {
		k := min(len(p), 100)
		dst = append(dst, byte(k))
		for _, b := range p[:k] {
			dst = append(dst, b^0x5a)
		}
		p = p[k:]
	}
	return dst
}

// unframe reads frames from br until an end frame, returning the plaintext.
func unframe(t *testing.T, br *bufio.Reader) []byte {
	t.Helper()
	var out []byte
	for {
		n, err := br.ReadByte()
		if err != nil {
			t.Fatalf("reading a frame: %v (after %q)", err, out)
		}
		if n == 0 {
			return out
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			t.Fatal(err)
		}
		for _, c := range b {
			out = append(out, c^0x5a)
		}
	}
}

// adoptedPair is a connected pair of loopback sockets: the client's conn, and a dup of the
// server side's fd for Adopt (the server side's own conn is closed).
func adoptedPair(t *testing.T) (net.Conn, int, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rc, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	_ = rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return c, fd, netip.MustParseAddrPort(c.LocalAddr().String())
}

// TestAdoptStream: an adopted socket is served in HTTP mode through its Stream: the plaintext
// given to Adopt first (a head's start, completed by the stream: never a connection's first
// bytes to classify), then frames decoded as they come (one cut between two writes waits for
// its rest), answers encoded, the connection counted while it is served, and a clean end
// (the stream's end) answered with the stream's own end before the close.
func TestAdoptStream(t *testing.T) {
	t.Parallel()
	target, _ := httpBackend(t)
	closed := make(chan error, 1)
	s := startRelay(t, target, Config{
		OnClose: func(c *Conn, in, out int64, err error) { closed <- err },
		// Its owner classified its first bytes: they are a request, whatever they look like.
		OnHTTPFirst: func(*Conn, []byte) bool { t.Error("OnHTTPFirst asked about an adopted connection"); return true },
	})
	c, fd, peer := adoptedPair(t)
	var got *Conn
	err := s.Adopt(fd, peer, &frameStream{}, []byte("GET /len/5 HTTP/1.1\r\n"), func(c *Conn) { got = c; c.Data = "owner" })
	if err != nil || got == nil || got.Data != "owner" {
		t.Fatalf("Adopt: %v, conn %v", err, got)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(frame(nil, []byte("Host: x\r\n\r\n"))); err != nil { // the head's rest
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	want := func(body string) {
		t.Helper()
		var resp []byte
		for !bytes.Contains(resp, []byte("\r\n\r\n"+body)) {
			n, err := br.ReadByte()
			if err != nil {
				t.Fatalf("reading: %v (after %q)", err, resp)
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(br, b); err != nil {
				t.Fatal(err)
			}
			for _, x := range b {
				resp = append(resp, x^0x5a)
			}
		}
		if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 OK\r\n")) {
			t.Fatalf("response %q", resp)
		}
	}
	want(string(pattern(5)))
	if active, _, _ := s.Stats(); active != 1 {
		t.Fatalf("active %d, want 1", active)
	}
	wire := frame(nil, []byte("GET /len/300 HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := c.Write(wire[:10]); err != nil { // a frame cut short
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Write(wire[10:]); err != nil {
		t.Fatal(err)
	}
	want(string(pattern(300)))
	if _, err := c.Write([]byte{0}); err != nil { // the stream's end
		t.Fatal(err)
	}
	if rest := unframe(t, br); len(rest) != 0 {
		t.Fatalf("after the responses: %q", rest)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the end frame: %v, want EOF", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("OnClose: %v, want a clean end", err)
	}
}

// TestAdoptRefused: a shut-down server adopts nothing (the socket stays the caller's, init is
// not called), and one closed with an adoption still queued reports it closed (OnClose).
func TestAdoptRefused(t *testing.T) {
	t.Parallel()
	target, _ := httpBackend(t)
	s := startRelay(t, target, Config{})
	s.Shutdown()
	_, fd, peer := adoptedPair(t)
	defer unix.Close(fd)
	err := s.Adopt(fd, peer, &frameStream{}, nil, func(*Conn) { t.Error("init called") })
	if !errors.Is(err, ErrNotAdopted) {
		t.Fatalf("Adopt after Shutdown: %v", err)
	}
	if err := s.Adopt(fd, peer, nil, nil, func(*Conn) {}); !errors.Is(err, ErrNotAdopted) {
		t.Fatalf("Adopt without a stream: %v", err)
	}

	// Queued when the loop closes: reported closed, whether the loop took it first or not.
	closed := make(chan error, 1)
	s2 := startRelay(t, target, Config{Loops: 1, OnClose: func(c *Conn, _, _ int64, err error) { closed <- err }})
	l := s2.loops[0]
	c2, fd2, peer2 := adoptedPair(t)
	ac := &Conn{l: l, peer: peer2, st: &frameStream{}}
	ac.s[0] = sock{fd: fd2, c: ac, other: &ac.s[1], dir: 0}
	ac.s[1] = sock{fd: -1, c: ac, other: &ac.s[0], dir: 1}
	l.cmdMu.Lock() // as Adopt queues it, without the wake-up
	l.adopts = append(l.adopts, adoption{c: ac})
	l.cmdMu.Unlock()
	_ = s2.Close()
	if err := s2.Adopt(fd, peer, &frameStream{}, nil, func(*Conn) {}); !errors.Is(err, ErrNotAdopted) {
		t.Fatalf("Adopt after Close: %v", err)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("OnClose: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued adoption was never reported closed")
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c2); err != nil && strings.Contains(err.Error(), "timeout") { // (its stream's end, then EOF)
		t.Fatalf("the adopted socket was not closed: %v", err)
	}
}

// TestTrickleBeforeHead: bytes that are not a request yet start the head's deadline, as a
// head's first byte does: empty lines before a request line, and stream bytes that do not come
// out decoded (a frame cut short, fed a byte at a time). Trickled, they keep no connection
// open past HTTPHeadTimeout (before, each re-armed the keep-alive idle timeout).
func TestTrickleBeforeHead(t *testing.T) {
	t.Parallel()
	target, _ := httpBackend(t)
	cfg := Config{HTTPHeadTimeout: 300 * time.Millisecond, HTTPIdleTimeout: 20 * time.Second, HTTPFirstTimeout: 20 * time.Second}
	s := startRelay(t, target, cfg)
	trickle := func(t *testing.T, c net.Conn, b []byte) {
		t.Helper()
		end := time.Now().Add(5 * time.Second)
		for i := 0; time.Now().Before(end); i++ {
			if _, err := c.Write(b[i%len(b) : i%len(b)+1]); err != nil {
				return // closed: the deadline ran from the first byte
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("still open after 5 s of trickling: %v", err)
		}
	}
	t.Run("empty lines", func(t *testing.T) {
		t.Parallel()
		c, _ := dialHTTP(t, s)
		trickle(t, c, []byte("\r\n"))
	})
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		c, fd, peer := adoptedPair(t)
		if err := s.Adopt(fd, peer, &frameStream{}, nil, func(*Conn) {}); err != nil {
			t.Fatal(err)
		}
		trickle(t, c, frame(nil, []byte(strings.Repeat("GET / HTTP/1.1\r\n", 10))))
	})
}
