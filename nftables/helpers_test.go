//go:build linux

package nftables

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
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
