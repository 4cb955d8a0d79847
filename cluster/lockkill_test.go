package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
)

// The lock holder of TestLockExpiresWhenHolderIsKilled is this test
// binary run again with these variables: it takes the lock, says so and
// waits to be killed.
const (
	envHolderEndpoint = "CLUSTER_TEST_HOLDER_ENDPOINT"
	envHolderPrefix   = "CLUSTER_TEST_HOLDER_PREFIX"
)

// lockHolder runs the holder process when the environment asks for it,
// and reports whether it did (TestMain then returns: the holder only
// returns if the lock could not be taken).
func lockHolder() bool {
	endpoint := os.Getenv(envHolderEndpoint)
	if endpoint == "" {
		return false
	}
	c, err := Dial(Config{Endpoints: []string{endpoint}, Prefix: os.Getenv(envHolderPrefix), LockTTL: 2 * time.Second})
	if err == nil {
		_, err = c.Locker().Lock(context.Background(), "order/example.com")
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	select {} // until killed
}

// TestLockExpiresWhenHolderIsKilled: a process holding the order lock is
// killed (SIGKILL, no unlock); another instance waiting for the lock gets
// it once the lease runs out, within the documented bound (LockTTL plus
// a margin), and not before the holder died.
func TestLockExpiresWhenHolderIsKilled(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	h := startHolder(t, envHolderEndpoint+"="+e.Endpoint(), envHolderPrefix+"=/kill")
	require.Equal(t, "locked", h.firstLine(t, 10*time.Second))

	cfg, _ := testConfig(t, "/kill", e.Endpoint())
	waiter := dial(t, cfg).Locker()
	got := make(chan time.Time, 1)
	var unlock func() error
	go func() {
		var err error
		unlock, err = waiter.Lock(t.Context(), "order/example.com")
		if err == nil {
			got <- time.Now()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("the waiter got the lock while the holder lived")
	case <-time.After(3 * time.Second): // longer than the TTL: the live holder renews
	}

	h.kill(t)
	at := time.Now()
	select {
	case when, ok := <-got:
		require.True(t, ok, "the waiter's Lock failed")
		delay := when.Sub(at)
		t.Logf("lock taken over %v after the holder was killed (LockTTL 2 s)", delay.Round(10*time.Millisecond))
		require.Less(t, delay, cfg.LockTTL+3*time.Second)
		require.NoError(t, unlock())
	case <-time.After(cfg.LockTTL + 5*time.Second):
		t.Fatal("the lock of a killed holder never expired")
	}
}

// holder is this test binary run as a child process that TestMain turns
// into a lock or order holder (lockHolder, orderHolder); it is killed
// when the test ends, if the test did not kill it.
type holder struct {
	cmd    *exec.Cmd
	lines  chan string
	killed bool
}

// startHolder runs the holder with env added to the environment.
func startHolder(t *testing.T, env ...string) *holder {
	t.Helper()
	h := &holder{cmd: exec.Command(os.Args[0], "-test.run=^$"), lines: make(chan string, 1)}
	h.cmd.Env = append(os.Environ(), env...)
	out, err := h.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, h.cmd.Start())
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		h.lines <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		if !h.killed {
			h.kill(t)
		}
	})
	return h
}

// firstLine is the first line the holder printed ("error: ..." when it
// failed), or "" when it printed none within d.
func (h *holder) firstLine(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case s := <-h.lines:
		return s
	case <-time.After(d):
		return ""
	}
}

// kill ends the holder with SIGKILL (no unlock) and waits for it.
func (h *holder) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Kill())
	_ = h.cmd.Wait()
	h.killed = true
}
