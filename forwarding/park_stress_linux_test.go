//go:build linux

package forwarding

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// After Close, directions woken by Close do not spin trying to park again when maxWaiting
// is saturated: they wait in their goroutines.
func TestParkerCloseDoesNotSpin(t *testing.T) {
	pk := newTestParker(t, time.Hour, 1)
	const n = 6
	pipes := make([]*asyncPipe, n)
	for i := range pipes {
		pipes[i] = startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
		echoOnce(t, pipes[i].client, pipes[i].backend, "a")
	}
	time.Sleep(100 * time.Millisecond)
	t.Logf("parked before Close: %d waiting %d", pk.Parked(), pk.waiting.Load())
	pk.Close()
	time.Sleep(100 * time.Millisecond)
	c0 := cpuTime()
	time.Sleep(500 * time.Millisecond)
	used := cpuTime() - c0
	t.Logf("after Close: parked %d waiting %d; CPU used in 500ms idle: %v", pk.Parked(), pk.waiting.Load(), used)
	if used > 200*time.Millisecond {
		t.Errorf("idle pipes burn CPU after parker Close: %v in 500ms", used)
	}
	for _, p := range pipes {
		echoOnce(t, p.client, p.backend, "still")
		echoOnce(t, p.backend, p.client, "alive")
	}
}

// Close resumes every parked direction, and none parks again into the closing epoll set
// (where data would never wake it).
func TestParkerCloseLosesNoWake(t *testing.T) {
	for iter := range 30 {
		pk := newTestParker(t, time.Hour, 1)
		const n = 8
		pipes := make([]*asyncPipe, n)
		for i := range pipes {
			pipes[i] = startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
		}
		time.Sleep(20 * time.Millisecond)
		pk.Close()
		time.Sleep(20 * time.Millisecond)
		if got := pk.Parked(); got != 0 {
			t.Errorf("iter %d: %d directions parked after Close (in a closed epoll set)", iter, got)
		}
		for i, p := range pipes {
			if _, err := p.client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			p.backend.SetReadDeadline(time.Now().Add(1 * time.Second))
			b := make([]byte, 1)
			if _, err := io.ReadFull(p.backend, b); err != nil {
				t.Fatalf("iter %d pipe %d: data after Close lost: %v (parked=%d)", iter, i, err, pk.Parked())
			}
		}
		for _, p := range pipes {
			p.client.Close()
			p.backend.Close()
			p.wait(t, 5*time.Second)
		}
	}
}

// A park request's past deadline that lands after the direction parked (the sweeper and a
// park-at-once racing) must not end the pipe when data comes: with a parker, a deadline
// before any half-close is always a park request.
func TestStaleParkDeadlineDoesNotKillPipe(t *testing.T) {
	pk := saturatedParker(t)
	p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
	echoOnce(t, p.client, p.backend, "x")
	time.Sleep(50 * time.Millisecond)
	d := &p.piped.s.dirs[ClientToBackend]
	if d.state.Load() != dirParked {
		t.Fatal("direction did not park at once beyond maxWaiting")
	}
	// sweeper: parkReq.Store(true) happened before the direction's park() cleared it;
	// its SetReadDeadline(longAgo) lands now.
	_ = d.srcTCP.SetReadDeadline(longAgo)
	p.client.Write([]byte("y"))
	b := make([]byte, 1)
	p.backend.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, rerr := io.ReadFull(p.backend, b)
	p.client.Close()
	p.backend.Close()
	r := p.wait(t, 5*time.Second)
	if rerr != nil || errors.Is(r.Err, os.ErrDeadlineExceeded) {
		t.Errorf("pipe killed by a stale park deadline: read %v, result %v", rerr, r.Err)
	}
}

// Many pipes with a tiny park time and maxWaiting=1: random data both ways, half-closes,
// Piped.Close, ctx cancel; exact counts, done once, counters back to zero.
func TestParkStress(t *testing.T) {
	for _, mw := range []int{1, 3, 1024} {
		t.Run(fmt.Sprint("maxWaiting=", mw), func(t *testing.T) { parkStress(t, mw) })
	}
}

func parkStress(t *testing.T, mw int) {
	pk := newTestParker(t, 2*time.Millisecond, mw)
	const n = 120
	var wg sync.WaitGroup
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		p := startAsyncPipe(t, ctx, PipeOptions{Parker: pk, HalfCloseTimeout: 5 * time.Second})
		wg.Go(func() {
			defer cancel()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			var up, down int64
			buf := make([]byte, 4096)
			rounds := 3 + r.IntN(10)
			for range rounds {
				k := 1 + r.IntN(3000)
				if _, err := p.client.Write(buf[:k]); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				p.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(p.backend, buf[:k]); err != nil {
					t.Errorf("pipe %d: read up: %v", i, err)
					return
				}
				up += int64(k)
				k = 1 + r.IntN(3000)
				if _, err := p.backend.Write(buf[:k]); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(p.client, buf[:k]); err != nil {
					t.Errorf("pipe %d: read down: %v", i, err)
					return
				}
				down += int64(k)
				time.Sleep(time.Duration(r.IntN(8)) * time.Millisecond)
			}
			switch v := r.IntN(5); v {
			case 0, 1: // half-close one side, then a tail from the other side and its half-close
				first, second, tail := p.client, p.backend, &down
				if v == 1 {
					first, second, tail = p.backend, p.client, &up
				}
				first.CloseWrite()
				time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond)
				second.Write([]byte("tail"))
				*tail += 4
				second.CloseWrite()
				io.ReadAll(p.client)
				io.ReadAll(p.backend)
				res := p.wait(t, 5*time.Second)
				if res.Err != nil || res.ClientToBackend != up || res.BackendToClient != down {
					t.Errorf("pipe %d: %+v want %d/%d", i, res, up, down)
				}
			case 2:
				time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond)
				p.piped.Close()
				p.wait(t, 5*time.Second)
			case 3:
				time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond)
				cancel()
				p.wait(t, 5*time.Second)
			case 4:
				time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond)
				p.proxyClient.Close() // behind the pipe's back
				p.wait(t, 5*time.Second)
			}
		})
	}
	wg.Wait()
	time.Sleep(50 * time.Millisecond)
	if pk.Parked() != 0 || pk.waiting.Load() != 0 {
		t.Errorf("parked %d waiting %d after all pipes ended", pk.Parked(), pk.waiting.Load())
	}
	pk.mu.Lock()
	live := len(pk.registered(nil))
	pk.mu.Unlock()
	if live != 0 {
		t.Errorf("%d directions still registered", live)
	}
}

// Pipes closed right when a direction parks at once after moving data: the goroutine still
// inside park() and the one closeBoth resumed must not race (-race) nor lose the end.
func TestPipeClosedWhileParking(t *testing.T) {
	pk := saturatedParker(t)
	for i := range 400 {
		p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
		p.client.Write([]byte("x"))
		if i%3 == 0 {
			time.Sleep(time.Duration(i%50) * time.Microsecond)
		}
		p.piped.Close()
		p.wait(t, 5*time.Second)
	}
}

// Forced interleaving of the above: the parking goroutine is held between marking itself
// parked and arming (armMu), the pipe is closed (closeBoth resumes the direction in a new
// goroutine, which ends and unregisters), then the parking goroutine goes on.
func TestPipeClosedWhileArming(t *testing.T) {
	pk := saturatedParker(t)
	p := startAsyncPipe(t, context.Background(), PipeOptions{Parker: pk})
	time.Sleep(20 * time.Millisecond) // both directions parked at once
	d := &p.piped.s.dirs[ClientToBackend]
	d.armMu.Lock()
	p.client.Write([]byte("x")) // resume, move, park at once: blocks in park() on armMu
	for d.state.Load() != dirParked {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	p.piped.Close()
	time.Sleep(50 * time.Millisecond) // no synchronisation with the resumed goroutine
	d.armMu.Unlock()
	p.wait(t, 5*time.Second)
	time.Sleep(20 * time.Millisecond)
}
