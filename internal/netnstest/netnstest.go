//go:build linux

package netnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// envInside marks the re-executed test binary.
const envInside = "SMARTPROXY_NETNSTEST_INSIDE"

// unavailable says why namespaces cannot be made ("" when they can).
var unavailable string

// Main runs the tests of m inside a new user, network and mount namespace
// and returns the exit code for os.Exit. When the namespace cannot be
// made, it runs them here and New skips each topology test with the reason.
func Main(m *testing.M, run func(*testing.M) int) int {
	if os.Getenv(envInside) != "" {
		if err := setupInside(); err != nil {
			unavailable = err.Error()
		}
		return run(m)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		unavailable = "unshare not installed (util-linux): " + err.Error()
		return run(m)
	}
	if out, err := exec.Command("unshare", "-Urnm", "true").CombinedOutput(); err != nil {
		unavailable = fmt.Sprintf("cannot create namespaces (unshare -Urnm: %v: %s)", err, strings.TrimSpace(string(out)))
		return run(m)
	}
	cmd := exec.Command("unshare", append([]string{"-Urnm", "--", os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "netnstest:", err)
		return 1
	}
	return 0
}

// setupInside gives `ip netns` a private /run to work in.
func setupInside() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("iproute2 not installed: %w", err)
	}
	if err := unix.Mount("none", "/run", "tmpfs", 0, ""); err != nil {
		return fmt.Errorf("mounting a private /run: %w", err)
	}
	return os.MkdirAll("/run/netns", 0o755)
}

// Inside reports whether the tests run in the namespace Main made.
func Inside() bool { return os.Getenv(envInside) != "" && unavailable == "" }

// Topology is three network namespaces: Cli (10.200.1.1, fd00:1::1) ↔
// Prx (10.200.1.2, fd00:1::2 | 10.200.2.1, fd00:2::1) ↔ Bkd (10.200.2.2,
// fd00:2::2). Cli and Bkd route everything through Prx, which forwards.
type Topology struct {
	Cli, Prx, Bkd string // namespace names (under /run/netns)
	// PrxFD is an open file of Prx's namespace, for nftables.Config.NetNS
	// (0 when Prx is the process's own, see NewHere).
	PrxFD int
}

// The topology's addresses.
var (
	CliAddr4, CliAddr6 = "10.200.1.1", "fd00:1::1"
	PrxAddr4, PrxAddr6 = "10.200.1.2", "fd00:1::2"
	BkdAddr4, BkdAddr6 = "10.200.2.2", "fd00:2::2"
)

var seq atomic.Int64

// New builds a topology for t and removes it when t ends; it skips t
// with the reason when namespaces cannot be made.
func New(t testing.TB) *Topology {
	t.Helper()
	if unavailable != "" {
		skip(t, "network namespaces unavailable: "+unavailable)
	}
	if os.Getenv(envInside) == "" {
		skip(t, "network namespaces unavailable: not run through netnstest.Main")
	}
	return build(t, fmt.Sprintf("prx%d", seq.Add(1)))
}

// build makes the topology; prx "" is the process's own namespace.
func build(t testing.TB, prx string) *Topology {
	t.Helper()
	n := seq.Add(1)
	tp := &Topology{Cli: fmt.Sprintf("cli%d", n), Prx: prx, Bkd: fmt.Sprintf("bkd%d", n)}
	names := []string{tp.Cli, tp.Bkd}
	if prx != "" {
		names = append(names, prx)
	}
	for _, ns := range names {
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	var here []string // `ip -n PRX` or nothing
	var into []string // `netns PRX` or the namespace of this process
	if prx != "" {
		here, into = []string{"-n", prx}, []string{"netns", prx}
	} else {
		into = []string{"netns", fmt.Sprint(os.Getpid())}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	steps := [][]string{
		{"netns", "add", tp.Cli}, {"netns", "add", tp.Bkd},
		{"-n", tp.Cli, "link", "set", "lo", "up"}, cat(here, []string{"link", "set", "lo", "up"}), {"-n", tp.Bkd, "link", "set", "lo", "up"},
		cat([]string{"-n", tp.Cli, "link", "add", "c0", "type", "veth", "peer", "name", "p0"}, into),
		cat(here, []string{"link", "add", "p1", "type", "veth", "peer", "name", "b0", "netns", tp.Bkd}),
		{"-n", tp.Cli, "addr", "add", CliAddr4 + "/24", "dev", "c0"}, {"-n", tp.Cli, "addr", "add", CliAddr6 + "/64", "dev", "c0", "nodad"},
		cat(here, []string{"addr", "add", PrxAddr4 + "/24", "dev", "p0"}), cat(here, []string{"addr", "add", PrxAddr6 + "/64", "dev", "p0", "nodad"}),
		cat(here, []string{"addr", "add", "10.200.2.1/24", "dev", "p1"}), cat(here, []string{"addr", "add", "fd00:2::1/64", "dev", "p1", "nodad"}),
		{"-n", tp.Bkd, "addr", "add", BkdAddr4 + "/24", "dev", "b0"}, {"-n", tp.Bkd, "addr", "add", BkdAddr6 + "/64", "dev", "b0", "nodad"},
		{"-n", tp.Cli, "link", "set", "c0", "up"}, cat(here, []string{"link", "set", "p0", "up"}),
		cat(here, []string{"link", "set", "p1", "up"}), {"-n", tp.Bkd, "link", "set", "b0", "up"},
		{"-n", tp.Cli, "route", "add", "default", "via", PrxAddr4}, {"-n", tp.Cli, "-6", "route", "add", "default", "via", PrxAddr6},
		{"-n", tp.Bkd, "route", "add", "default", "via", "10.200.2.1"}, {"-n", tp.Bkd, "-6", "route", "add", "default", "via", "fd00:2::1"},
	}
	if prx != "" {
		steps = append([][]string{{"netns", "add", prx}}, steps...)
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	tp.Sysctl(t, tp.Prx, "net/ipv4/ip_forward", "1")
	tp.Sysctl(t, tp.Prx, "net/ipv6/conf/all/forwarding", "1")
	if prx == "" {
		return tp
	}
	f, err := os.Open("/run/netns/" + tp.Prx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	tp.PrxFD = int(f.Fd())
	return tp
}

// Sysctl writes a sysctl (as a /proc/sys path) in namespace ns.
func (tp *Topology) Sysctl(t testing.TB, ns, key, value string) {
	t.Helper()
	err := In(ns, func() error {
		// /proc/sys/net shows the namespace of the task that opens it.
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0)
	})
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, ns, err)
	}
}

// In runs fn on a thread inside namespace ns. Sockets fn opens stay in
// ns and can be used from any goroutine afterwards. The thread is thrown
// away afterwards rather than moved back.
func In(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a listener in ns.
func Listen(t testing.TB, ns, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := In(ns, func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// ListenPacket opens a packet socket in ns.
func ListenPacket(t testing.TB, ns, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	if err := In(ns, func() (err error) { pc, err = net.ListenPacket(network, addr); return err }); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// Dial connects from ns; the socket is made in ns, the wait for the
// connection happens here.
func Dial(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := In(ns, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
