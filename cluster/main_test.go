package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if lockHolder() || orderHolder() {
		return
	}
	goleak.VerifyTestMain(m)
}

// testConfig is a Config for tests: fast probes, a short lock lease,
// the log kept in the returned buffer.
func testConfig(t *testing.T, prefix string, endpoints ...string) (Config, *logBuffer) {
	logs := newLogBuffer(t)
	return Config{
		Endpoints:     endpoints,
		Prefix:        prefix,
		OpTimeout:     2 * time.Second,
		ProbeInterval: 200 * time.Millisecond,
		LockTTL:       2 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

// logBuffer keeps a test's log lines, shown if the test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func newLogBuffer(t *testing.T) *logBuffer {
	l := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", l)
		}
	})
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// dial connects a client that is closed when the test ends.
func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Dial(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually retries op until it succeeds: right after a member is lost
// the first operations may fail while etcd elects a leader.
func eventually(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err = op(t.Context()); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never succeeded: %v", what, err)
}
