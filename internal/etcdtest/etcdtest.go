// Package etcdtest runs real etcd members on loopback for tests: one
// member or a cluster of several, each on free ports with a data
// directory of the test's own, killed when the test ends. Tests skip,
// saying why, when the etcd binary is not installed (Debian package
// etcd-server).
package etcdtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a running etcd cluster.
type Cluster struct {
	Members []*Member
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	dir       string
	args      []string
	cmd       *exec.Cmd
	exited    chan struct{}
	health    *http.Client // nil: plain HTTP
}

// Binary returns the etcd binary's path, or skips the test.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("etcd")
	if err != nil {
		t.Skipf("etcd not installed (apt-get install etcd-server): %v", err)
	}
	return path
}

// Start runs a cluster of n members and waits until every member is
// healthy. The members are killed when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, nil, nil)
}

// start is Start with TLS arguments for every member and the client that
// checks their health over https (both nil for plain HTTP).
func start(t testing.TB, n int, tlsArgs []string, health *http.Client) *Cluster {
	t.Helper()
	bin := Binary(t)
	root := t.TempDir()
	c := &Cluster{}
	scheme := "http://"
	if health != nil {
		scheme = "https://"
	}
	var initial []string
	peers := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		peers[i] = "http://127.0.0.1:" + strconv.Itoa(freePort(t))
		initial = append(initial, name+"="+peers[i])
		c.Members = append(c.Members, &Member{
			Name:      name,
			ClientURL: scheme + "127.0.0.1:" + strconv.Itoa(freePort(t)),
			dir:       filepath.Join(root, name),
			health:    health,
		})
	}
	for i, m := range c.Members {
		m.args = []string{bin,
			"--name", m.Name, "--data-dir", filepath.Join(m.dir, "data"), "--logger", "zap",
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", filepath.Base(root),
		}
		m.args = append(m.args, tlsArgs...)
		m.start(t)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.kill()
		}
	})
	for _, m := range c.Members {
		m.waitHealthy(t)
	}
	return c
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var e []string
	for _, m := range c.Members {
		e = append(e, m.ClientURL)
	}
	return e
}

// Endpoint is the client URL of the first member.
func (c *Cluster) Endpoint() string { return c.Members[0].ClientURL }

func (m *Member) start(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(m.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(m.exited)
	}()
}

// Kill ends the member at once (SIGKILL: a crash, or a machine lost) and
// waits until it has exited.
func (m *Member) Kill(t testing.TB) {
	t.Helper()
	m.kill()
}

func (m *Member) kill() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Restart starts a killed member again with its data directory and waits
// until it is healthy (for a member of a cluster, until it rejoined).
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	m.start(t)
	m.waitHealthy(t)
}

func (m *Member) waitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	client := m.health
	if client == nil {
		client = &http.Client{Timeout: time.Second}
	}
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			t.Fatalf("etcd %s exited:\n%s", m.Name, m.Log())
		default:
		}
		resp, err := client.Get(m.ClientURL + "/health")
		if err == nil {
			var b [64]byte
			n, _ := resp.Body.Read(b[:])
			_ = resp.Body.Close()
			if strings.Contains(string(b[:n]), `"health":"true"`) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("etcd %s not healthy within 15 s:\n%s", m.Name, m.Log())
}

// Log returns the tail of the member's log, for failure messages.
func (m *Member) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "etcd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
