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
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHolderEndpoint+"="+e.Endpoint(), envHolderPrefix+"=/kill")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked", strings.TrimSpace(line))

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

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	_, _ = io.Copy(io.Discard, out)
	killed = true
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
