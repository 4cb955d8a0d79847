//go:build linux

package forwarding

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testParker returns a parker with a short idle time, closed at the end of the test.
func testParker(t *testing.T) *IdleParker { return newTestParker(t, 60*time.Millisecond, 0) }

// newTestParker returns NewIdleParker(after, maxWaiting), closed at the end of the test.
func newTestParker(t *testing.T, after time.Duration, maxWaiting int) *IdleParker {
	t.Helper()
	p, err := NewIdleParker(after, maxWaiting)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// saturatedParker returns a parker whose single waiting place is taken by an idle pipe
// (its first direction to wait), so every other direction that finds no data parks at once.
func saturatedParker(t *testing.T) *IdleParker {
	t.Helper()
	pk := newTestParker(t, time.Hour, 1)
	startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
	deadline := time.Now().Add(5 * time.Second)
	for pk.waiting.Load() != 1 || pk.Parked() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("waiting %d, parked %d; want 1 and 1", pk.waiting.Load(), pk.Parked())
		}
		time.Sleep(time.Millisecond)
	}
	return pk
}

// waitParked waits until p has want parked directions.
func waitParked(t *testing.T, p *IdleParker, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Parked() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked, want %d", p.Parked(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// copyGoroutines counts goroutines running a Pipe direction.
func copyGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "forwarding.copyClientToBackend(") +
		strings.Count(string(buf), "forwarding.copyBackendToClient(")
}

// echoOnce writes msg on from and reads it on to.
func echoOnce(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	to.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(to, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
	to.SetReadDeadline(time.Time{})
}

// An idle pipe gives up both goroutines; data in either direction resumes it, exactly, and
// it parks again afterwards.
func TestParkedPipeHoldsNoGoroutineAndResumes(t *testing.T) {
	pk := testParker(t)
	before := copyGoroutines()
	p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
	echoOnce(t, p.client, p.backend, "hello")
	echoOnce(t, p.backend, p.client, "world!")
	waitParked(t, pk, 2)
	if n := copyGoroutines() - before; n != 0 {
		t.Fatalf("%d copy goroutines while parked, want 0", n)
	}
	for i := range 3 {
		echoOnce(t, p.client, p.backend, "ping")
		echoOnce(t, p.backend, p.client, "pong!")
		waitParked(t, pk, 2)
		if i == 0 && pk.Parked() != 2 {
			t.Fatal("not parked again")
		}
	}
	p.client.CloseWrite()
	p.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, p.backend); n != 0 || err != nil {
		t.Fatalf("backend after client EOF: %d bytes, %v", n, err)
	}
	p.backend.Close()
	r := p.wait(t, 5*time.Second)
	if r.Err != nil || r.ClientToBackend != int64(5+3*4) || r.BackendToClient != int64(6+3*5) {
		t.Fatalf("result %+v", r)
	}
	waitParked(t, pk, 0)
}

// EOF arriving while parked is passed on as a half-close, and the other direction (also
// parked) keeps working until the backend answers and closes.
func TestParkedPipeHalfCloseAndServerAnswer(t *testing.T) {
	pk := testParker(t)
	p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk, HalfCloseTimeout: 5 * time.Second})
	echoOnce(t, p.client, p.backend, "q")
	waitParked(t, pk, 2)
	p.client.CloseWrite()
	p.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.backend.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("backend read after client half-close: %v, want EOF", err)
	}
	// The half-closed pipe's remaining direction must not park: it waits under its timeout.
	time.Sleep(200 * time.Millisecond)
	if n := pk.Parked(); n != 0 {
		t.Fatalf("%d directions parked after half-close, want 0", n)
	}
	p.backend.Write([]byte("answer"))
	p.backend.Close()
	got, err := io.ReadAll(p.client)
	if err != nil || string(got) != "answer" {
		t.Fatalf("client got %q, %v", got, err)
	}
	if r := p.wait(t, 5*time.Second); r.Err != nil || r.BackendToClient != 6 {
		t.Fatalf("result %+v", r)
	}
}

// A half-close on a parked pipe still ends it after HalfCloseTimeout of silence.
func TestParkedPipeHalfCloseTimeout(t *testing.T) {
	pk := testParker(t)
	p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk, HalfCloseTimeout: 300 * time.Millisecond})
	echoOnce(t, p.client, p.backend, "q")
	waitParked(t, pk, 2)
	start := time.Now()
	p.client.CloseWrite()
	r := p.wait(t, 5*time.Second)
	if !errors.Is(r.Err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v, want the half-close deadline", r.Err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("ended after %v, before the half-close timeout", d)
	}
}

// Closing a parked pipe, cancelling its context, or closing its conns behind its back all
// end it, with its done callback, and leave nothing parked.
func TestParkedPipeEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(p *asyncPipe, cancel context.CancelFunc)
		want func(error) bool
		// bySweep: only the sweeper can notice this end (an fd closed behind
		// the pipe's back leaves the epoll set without an event). The other
		// cases run where the sweeper never runs in time (park time 1 h,
		// parking forced by a full waiting bound), so they prove their own
		// wake-up path.
		bySweep bool
	}{
		{"Piped.Close", func(p *asyncPipe, _ context.CancelFunc) { p.piped.Close() }, func(err error) bool { return err == nil }, false},
		{"context", func(_ *asyncPipe, cancel context.CancelFunc) { cancel() }, func(err error) bool { return errors.Is(err, context.Canceled) }, false},
		{"conns closed directly", func(p *asyncPipe, _ context.CancelFunc) { p.proxyClient.Close(); p.proxyBackend.Close() },
			func(err error) bool { return errors.Is(err, net.ErrClosed) }, true},
		{"client reset", func(p *asyncPipe, _ context.CancelFunc) { p.client.SetLinger(0); p.client.Close() },
			func(err error) bool { return err != nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk, base := testParker(t), 0
			if !tc.bySweep {
				pk, base = saturatedParker(t), 1 // the saturating pipe has one direction parked
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := startAsyncPipe(t, ctx, PipeOptions{Parker: pk})
			echoOnce(t, p.client, p.backend, "x")
			waitParked(t, pk, base+2)
			tc.end(p, cancel)
			r := p.wait(t, 5*time.Second)
			if !tc.want(r.Err) {
				t.Fatalf("err %v", r.Err)
			}
			waitParked(t, pk, base)
		})
	}
}

// Closing the parker resumes what it parked: the pipes go on in goroutines.
func TestParkerCloseResumesPipes(t *testing.T) {
	pk := testParker(t)
	p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
	echoOnce(t, p.client, p.backend, "x")
	waitParked(t, pk, 2)
	pk.Close()
	waitParked(t, pk, 0)
	echoOnce(t, p.client, p.backend, "still")
	echoOnce(t, p.backend, p.client, "alive")
	p.client.Close()
	p.backend.Close()
	p.wait(t, 5*time.Second)
}

// Many pipes park and resume concurrently (run with -race) without losing or reordering
// a byte.
func TestManyParkedPipes(t *testing.T) {
	pk := testParker(t)
	const n = 100
	pipes := make([]*asyncPipe, n)
	for i := range pipes {
		pipes[i] = startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
		echoOnce(t, pipes[i].client, pipes[i].backend, "a")
	}
	waitParked(t, pk, 2*n)
	var wg sync.WaitGroup
	for _, p := range pipes {
		wg.Go(func() {
			for range 5 {
				echoOnce(t, p.client, p.backend, "0123456789")
				echoOnce(t, p.backend, p.client, "abcdefghij")
				time.Sleep(100 * time.Millisecond)
			}
			p.client.Close()
			p.backend.Close()
		})
	}
	wg.Wait()
	for _, p := range pipes {
		if r := p.wait(t, 5*time.Second); r.ClientToBackend != 51 || r.BackendToClient != 50 {
			t.Fatalf("result %+v", r)
		}
	}
	waitParked(t, pk, 0)
}

// asyncPipe is a client<->StartPipe<->backend chain over loopback TCP.
type asyncPipe struct {
	*proxied                               // the real ends and the result
	proxyClient, proxyBackend *net.TCPConn // the pipe's conns
	piped                     *Piped
}

func startAsyncPipe(t *testing.T, ctx context.Context, opt PipeOptions) *asyncPipe {
	t.Helper()
	p := &asyncPipe{proxied: &proxied{result: make(chan PipeResult, 1)}}
	p.client, p.proxyClient = tcpPair(t)
	p.proxyBackend, p.backend = tcpPair(t)
	var calls atomic.Int32
	p.piped = StartPipe(ctx, p.proxyClient, p.proxyBackend, opt, func(r PipeResult) {
		if calls.Add(1) > 1 {
			t.Error("StartPipe called done twice")
			return
		}
		p.result <- r
	})
	t.Cleanup(func() {
		p.client.Close()
		p.backend.Close()
		p.wait(t, 5*time.Second)
	})
	return p
}
