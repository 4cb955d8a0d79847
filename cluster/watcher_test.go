package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/etcdtest"
)

// applier records the documents a watcher applied; it refuses documents
// that contain "invalid", as the CLI refuses a config that does not
// validate.
type applier struct {
	mu      sync.Mutex
	applied []Document
	refused []int64
}

func (a *applier) apply(d Document) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if strings.Contains(string(d.Data), "invalid") {
		a.refused = append(a.refused, d.Revision)
		return errors.New("route #0: invalid")
	}
	a.applied = append(a.applied, d)
	return nil
}

// last is the data of the last applied document.
func (a *applier) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.applied) == 0 {
		return ""
	}
	return string(a.applied[len(a.applied)-1].Data)
}

// inOrder checks that the applied revisions only grew.
func (a *applier) inOrder(t *testing.T) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 1; i < len(a.applied); i++ {
		require.Greater(t, a.applied[i].Revision, a.applied[i-1].Revision, "applied out of order")
	}
}

// runWatcher runs a watcher until the test ends.
func runWatcher(t *testing.T, c *Client, applied int64) (*Watcher, *applier) {
	a := &applier{}
	w := c.NewWatcher(applied, a.apply)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, a
}

func publish(t *testing.T, c *Client, doc string) int64 {
	t.Helper()
	rev, err := c.Publish(t.Context(), []byte(doc))
	require.NoError(t, err)
	return rev
}

// TestWatcherAppliesAndRefuses: a published document reaches the
// watcher (the delay is logged), an invalid one is refused and keeps
// the revision, a later valid one applies, a deletion keeps the routes.
func TestWatcherAppliesAndRefuses(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	cfg, logs := testConfig(t, "/watch", e.Endpoint())
	pub := dial(t, cfg)
	w, a := runWatcher(t, dial(t, cfg), 0)
	require.Eventually(t, w.Connected, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "no configuration published") }, 5*time.Second, time.Millisecond)
	require.Zero(t, w.Revision())

	var worst time.Duration
	for i, doc := range []string{`{"v": 1}`, `{"v": 2}`, `{"v": 3}`} {
		start := time.Now()
		rev := publish(t, pub, doc)
		require.Eventually(t, func() bool { return w.Revision() == rev }, 5*time.Second, time.Millisecond, "publish %d", i)
		worst = max(worst, time.Since(start))
		require.Equal(t, doc, a.last())
	}
	t.Logf("publish to applied: at most %v (of 3)", worst)
	good := w.Revision()

	bad := publish(t, pub, `{"v": "invalid"}`)
	require.Eventually(t, func() bool { return w.LastError() != nil }, 5*time.Second, time.Millisecond)
	require.Equal(t, good, w.Revision(), "a refused document keeps the running revision")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "configuration refused") }, 5*time.Second, time.Millisecond)
	// The probes see the refused revision again and again: it is not
	// offered twice, and the error stays.
	time.Sleep(3 * cfg.ProbeInterval)
	a.mu.Lock()
	require.Equal(t, []int64{bad}, a.refused)
	a.mu.Unlock()
	require.Error(t, w.LastError())

	_, err := pub.etcd.Delete(t.Context(), pub.ConfigKey())
	require.NoError(t, err)
	time.Sleep(3 * cfg.ProbeInterval)
	require.Equal(t, good, w.Revision(), "a deleted document keeps the routes")
	require.Equal(t, 2, strings.Count(logs.String(), "no configuration published"), "the deletion is logged once")

	rev := publish(t, pub, `{"v": 4}`)
	require.Eventually(t, func() bool { return w.Revision() == rev }, 5*time.Second, time.Millisecond)
	require.NoError(t, w.LastError())
	a.inOrder(t)
}

// TestWatcherCutOffCatchesUp: an instance whose only etcd member dies
// keeps its revision and reports not connected; meanwhile the rest of
// the cluster publishes twice and compacts; when the member comes back
// the instance catches up with the current revision.
func TestWatcherCutOffCatchesUp(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 3)
	cut := e.Members[2]
	cfgPub, _ := testConfig(t, "/cut", e.Members[0].ClientURL, e.Members[1].ClientURL)
	cfgW, logs := testConfig(t, "/cut", cut.ClientURL)
	pub := dial(t, cfgPub)
	first := publish(t, pub, `{"v": 1}`)
	w, a := runWatcher(t, dial(t, cfgW), 0)
	require.Eventually(t, func() bool { return w.Revision() == first }, 5*time.Second, 5*time.Millisecond)
	require.True(t, w.Connected())

	cut.Kill(t)
	start := time.Now()
	require.Eventually(t, func() bool { return !w.Connected() }, 5*time.Second, 5*time.Millisecond, "losing etcd must show")
	t.Logf("not connected %v after the member died (probe %v, op timeout %v)", time.Since(start).Round(time.Millisecond), cfgW.ProbeInterval, cfgW.OpTimeout)
	require.Error(t, w.LastError())
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "etcd unreachable") }, 5*time.Second, time.Millisecond)

	publish(t, pub, `{"v": 2}`)
	last := publish(t, pub, `{"v": 3}`)
	_, err := pub.etcd.Compact(t.Context(), last)
	require.NoError(t, err)
	require.Equal(t, first, w.Revision(), "cut off, the instance keeps its revision")

	cut.Restart(t)
	start = time.Now()
	require.Eventually(t, func() bool { return w.Revision() == last }, 15*time.Second, 5*time.Millisecond, "the instance must catch up")
	t.Logf("caught up %v after the member was healthy again", time.Since(start).Round(time.Millisecond))
	require.Eventually(t, w.Connected, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, `{"v": 3}`, a.last())
	a.inOrder(t)

	// The watch works again too: the next publish arrives.
	next := publish(t, pub, `{"v": 4}`)
	require.Eventually(t, func() bool { return w.Revision() == next }, 5*time.Second, 5*time.Millisecond)
}

// TestWatcherCompactedWatch: a watch that resumes from a compacted
// revision ends asking for a re-read (next revision 0, which watchLoop
// answers with a read of the document, as at start).
func TestWatcherCompactedWatch(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 1)
	cfg, logs := testConfig(t, "/compact", e.Endpoint())
	c := dial(t, cfg)
	first := publish(t, c, `{"v": 1}`)
	publish(t, c, `{"v": 2}`)
	last := publish(t, c, `{"v": 3}`)
	_, err := c.etcd.Compact(t.Context(), last)
	require.NoError(t, err)

	a := &applier{}
	w := c.NewWatcher(first, a.apply)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.Zero(t, w.watch(ctx, first+1), "an old watch resuming after compaction must ask for a re-read")
	require.NoError(t, ctx.Err(), "the watch must end at once, not wait")
	require.Contains(t, logs.String(), "compacted")
	require.Empty(t, a.applied, "nothing from the compacted range")
	require.Equal(t, last, w.sync(ctx), "the re-read is at the current revision")
	require.Equal(t, last, w.Revision())
}

// TestThreeMembersOneKilled: with every endpoint given, losing the
// leader costs at most a retry: storage, lock, publish and watch go on.
func TestThreeMembersOneKilled(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t, 3)
	cfg, _ := testConfig(t, "/three", e.Endpoints()...)
	c := dial(t, cfg)
	w, _ := runWatcher(t, dial(t, cfg), 0)
	rev := publish(t, c, `{"v": 1}`)
	require.Eventually(t, func() bool { return w.Revision() == rev }, 5*time.Second, 5*time.Millisecond)

	// Kill the leader: the harder case (an election).
	leader := -1
	for i, m := range e.Members {
		st, err := c.etcd.Status(t.Context(), m.ClientURL)
		require.NoError(t, err)
		if st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	require.NotEqual(t, -1, leader)
	e.Members[leader].Kill(t)

	s := c.Storage()
	eventually(t, "store after the leader died", func(ctx context.Context) error { return s.Store(ctx, "k", []byte("v")) })
	v, err := s.Load(t.Context(), "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
	unlock, err := c.Locker().Lock(t.Context(), "order")
	require.NoError(t, err)
	require.NoError(t, unlock())
	rev = publish(t, c, `{"v": 2}`)
	require.Eventually(t, func() bool { return w.Revision() == rev }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, w.Connected, 5*time.Second, 5*time.Millisecond)
}
