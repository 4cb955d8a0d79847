package nftables

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/netnstest"
)

const envRole, envNetNS, envTable = "SMARTPROXY_NFT_ROLE", "SMARTPROXY_NFT_NETNS", "SMARTPROXY_NFT_TABLE"

// runRole is a child process's part in a test: "hold" makes a table and
// waits to be killed; "probe" prints what New says.
func runRole(role string) int {
	switch role {
	case "hold":
		f, err := os.Open(os.Getenv(envNetNS))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		m, err := New(Config{TableName: os.Getenv(envTable), NetNS: int(f.Fd())})
		if err == nil {
			err = m.Start(context.Background(), []Route{{Name: "crashed", Ports: []PortRange{{7000, 7000}}, Hosts: []netip.Addr{netip.MustParseAddr(netnstest.BkdAddr4)}}})
		}
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "probe":
		_, err := New(Config{})
		fmt.Println("error:", err)
	}
	return 0
}

// child starts the test binary in a role.
func child(t *testing.T, role string, attr *syscall.SysProcAttr, env ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envRole+"="+role), env...)
	cmd.SysProcAttr = attr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

// startManager starts a Manager on the topology's proxy namespace and
// stops it when the test ends.
func startManager(t *testing.T, tp *netnstest.Topology, routes ...Route) *Manager {
	t.Helper()
	m, err := New(Config{TableName: "test", NetNS: tp.PrxFD})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), routes); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return m
}

// tcpBackend accepts in ns on addr and answers each connection with
// "<port> <client address>\n", then echoes. Seen receives each client.
type tcpBackend struct {
	mu   sync.Mutex
	seen []string
}

func (b *tcpBackend) clients() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

func serveTCP(t *testing.T, ns, addr string) *tcpBackend {
	t.Helper()
	l := netnstest.Listen(t, ns, "tcp", addr)
	b := &tcpBackend{}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ra := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
			b.mu.Lock()
			b.seen = append(b.seen, ra)
			b.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "%d %s\n", l.Addr().(*net.TCPAddr).Port, ra)
				_, _ = io.Copy(c, c)
			})
		}
	})
	return b
}

// serveUDP answers each datagram with "<port> <client address> <data>".
func serveUDP(t *testing.T, ns, addr string) *int64Counter {
	t.Helper()
	pc := netnstest.ListenPacket(t, ns, "udp", addr)
	n := &int64Counter{}
	done := make(chan struct{})
	t.Cleanup(func() { _ = pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			n.add(int64(k))
			ra := from.(*net.UDPAddr).AddrPort().Addr().Unmap().String()
			_, _ = pc.WriteTo(fmt.Appendf(nil, "%d %s %s", pc.LocalAddr().(*net.UDPAddr).Port, ra, buf[:min(k, 64)]), from)
		}
	}()
	return n
}

type int64Counter struct {
	mu sync.Mutex
	n  int64
}

func (c *int64Counter) add(v int64) { c.mu.Lock(); c.n += v; c.mu.Unlock() }
func (c *int64Counter) get() int64  { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// askTCP connects from the client namespace and returns the backend's
// greeting line, after checking that bytes echo.
func askTCP(ns, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := netnstest.Dial(ctx, ns, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	if echo, err := r.ReadString('\n'); err != nil || echo != "ping\n" {
		return "", fmt.Errorf("echo %q: %v", echo, err)
	}
	return strings.TrimSpace(line), nil
}

// askUDP sends one datagram from the client namespace and returns the
// answer.
func askUDP(ns, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := netnstest.Dial(ctx, ns, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, fmt.Sprint(port))
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}
