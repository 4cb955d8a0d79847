//go:build linux

package nftables

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	nft "github.com/google/nftables"

	"github.com/gosmartproxy/smartproxy/internal/netnstest"
)

// Port lists, ranges and per-port mappings reach the right backend port.
func TestPortRangesAndMappings(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	for _, p := range []int{9100, 9101, 9102, 9200, 8300, 8301} {
		netnstest.ServeTCP(t, tp.Bkd, fmt.Sprintf(":%d", p))
	}
	mapped := map[uint16]uint16{8100: 9100, 8101: 9101, 8102: 9102, 8200: 9200}
	startManager(t, tp,
		Route{Name: "mapped", Ports: []PortRange{{8100, 8102}, {8200, 8200}}, Hosts: addrs(netnstest.BkdAddr4, netnstest.BkdAddr6), PortMap: mapped},
		Route{Name: "same-port", Ports: []PortRange{{8300, 8301}}, Hosts: addrs(netnstest.BkdAddr4)},
	)
	want := map[int]int{8100: 9100, 8101: 9101, 8102: 9102, 8200: 9200, 8300: 8300, 8301: 8301}
	for from, to := range want {
		got, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, from), 3*time.Second)
		if err != nil || !strings.HasPrefix(got, fmt.Sprint(to)+" ") {
			t.Errorf("port %d: got %q, %v; want backend port %d", from, got, err, to)
		}
	}
	got, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr6, 8101), 3*time.Second)
	if err != nil || !strings.HasPrefix(got, "9101 ") {
		t.Errorf("IPv6 port 8101: got %q, %v; want 9101", got, err)
	}
}

// Several hosts are taken in turn (numgen inc).
func TestBalanceHosts(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	if out, err := exec.Command("ip", "-n", tp.Bkd, "addr", "add", "10.200.2.3/24", "dev", "b0").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	a := netnstest.ServeTCP(t, tp.Bkd, "10.200.2.2:9000")
	b := netnstest.ServeTCP(t, tp.Bkd, "10.200.2.3:9000")
	startManager(t, tp, Route{Name: "lb", Ports: []PortRange{{8000, 8000}}, Hosts: addrs("10.200.2.2", "10.200.2.3"), Port: 9000})
	for range 4 {
		if _, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, 8000), 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.Clients()) != 2 || len(b.Clients()) != 2 {
		t.Errorf("hosts got %d and %d connections, want 2 and 2", len(a.Clients()), len(b.Clients()))
	}
}

// listTable reads the table's chains and sets back through the library.
func listTable(t *testing.T, tp *netnstest.Topology, table string) (chains, sets []string) {
	t.Helper()
	c, err := nft.New(nft.WithNetNSFd(tp.PrxFD))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTableOfFamily(table, nft.TableFamilyINet); err != nil {
		return nil, nil // no table
	}
	cs, err := c.ListChainsOfTableFamily(nft.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range cs {
		if ch.Table.Name == table {
			chains = append(chains, ch.Name)
		}
	}
	ss, err := c.GetSets(&nft.Table{Name: table, Family: nft.TableFamilyINet})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		sets = append(sets, s.Name)
	}
	slices.Sort(chains)
	slices.Sort(sets)
	return chains, sets
}

func withPrefix(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// UpdateRoutes replaces only changed routes' objects, keeps unchanged
// ones (and their counters), and leaves nothing stale; Stop removes the
// table.
func TestUpdateAndRemove(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	netnstest.ServeTCP(t, tp.Bkd, ":9000")
	netnstest.ServeTCP(t, tp.Bkd, ":9001")
	keep := Route{Name: "keep", Ports: []PortRange{{8000, 8000}}, Hosts: addrs(netnstest.BkdAddr4), Port: 9000}
	change := Route{Name: "change", Ports: []PortRange{{8001, 8001}}, Hosts: addrs(netnstest.BkdAddr4), Port: 9000, Block: mustList(t, "10.9.9.9")}
	m := startManager(t, tp, keep, change)
	if _, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, 8000), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	chains0, _ := listTable(t, tp, "test")
	keepChains := withPrefix(chains0, chainBase("keep"))
	oldChange := withPrefix(chains0, chainBase("change"))
	if len(keepChains) != 4 || len(oldChange) != 4 {
		t.Fatalf("chains %v: want 4 per route", chains0)
	}

	change.Port = 9001
	change.Block = nil
	added := Route{Name: "added", Ports: []PortRange{{8002, 8002}}, Protocol: UDP, Hosts: addrs(netnstest.BkdAddr6), Port: 9000}
	if err := m.UpdateRoutes(context.Background(), []Route{keep, change, added}); err != nil {
		t.Fatal(err)
	}
	chains1, sets1 := listTable(t, tp, "test")
	if got := withPrefix(chains1, chainBase("keep")); !slices.Equal(got, keepChains) {
		t.Errorf("unchanged route's chains %v, want %v kept", got, keepChains)
	}
	newChange := withPrefix(chains1, chainBase("change"))
	if len(newChange) != 4 || slices.Contains(newChange, oldChange[0]) {
		t.Errorf("changed route's chains %v, want a new generation replacing %v", newChange, oldChange)
	}
	if got := withPrefix(sets1, chainBase("change")); len(got) != 1 { // ports only: the block list is gone
		t.Errorf("changed route's sets %v, want its ports set only", got)
	}
	got, err := netnstest.AskTCP(tp.Cli, hostPort(netnstest.PrxAddr4, 8001), 3*time.Second)
	if err != nil || !strings.HasPrefix(got, "9001 ") {
		t.Errorf("changed route: got %q, %v; want the new target port 9001", got, err)
	}
	st := mustStatus(t, m)
	if len(st.Routes) != 3 || st.Routes[2].Name != "keep" || st.Routes[2].Connections != 1 {
		t.Errorf("status %+v: want three routes, keep's counter kept at 1", st.Routes)
	}

	if err := m.UpdateRoutes(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	chains2, sets2 := listTable(t, tp, "test")
	wantChains := []string{chainFwd, chainOut, chainMark, chainPost, chainPre}
	slices.Sort(wantChains)
	if !slices.Equal(chains2, wantChains) || !slices.Equal(sets2, []string{"proto-all", "proto-tcp", "proto-udp"}) {
		t.Errorf("after removing every route: chains %v, sets %v; want only the base objects", chains2, sets2)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if chains, _ := listTable(t, tp, "test"); len(chains) != 0 {
		t.Errorf("after Stop: chains %v, want the table gone", chains)
	}
}

func mustStatus(t *testing.T, m *Manager) Status {
	t.Helper()
	st, err := m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A table left by a killed process is found by its owner marker and
// replaced at the next Start; while its owner lives, it is refused.
func TestCrashedTableReplaced(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	cmd, out := child(t, "hold", nil, envNetNS+"=/run/netns/"+tp.Prx, envTable+"=test")
	line, err := out.ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	m, err := New(Config{TableName: "test", NetNS: tp.PrxFD})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), nil); !errors.Is(err, ErrTableInUse) {
		t.Fatalf("Start beside a live owner: err = %v, want ErrTableInUse", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	chains, _ := listTable(t, tp, "test")
	if len(withPrefix(chains, chainBase("crashed"))) == 0 {
		t.Fatalf("chains %v: the killed process's route should still be there", chains)
	}
	startManager2(t, m, Route{Name: "fresh", Ports: []PortRange{{8000, 8000}}, Hosts: addrs(netnstest.BkdAddr4)})
	chains, _ = listTable(t, tp, "test")
	if len(withPrefix(chains, chainBase("crashed"))) != 0 || len(withPrefix(chains, chainBase("fresh"))) == 0 {
		t.Errorf("chains %v: want the stale route gone and the new one there", chains)
	}
}

func startManager2(t *testing.T, m *Manager, routes ...Route) {
	t.Helper()
	if err := m.Start(context.Background(), routes); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
}

// A table of the name that smartproxy did not make is left alone.
func TestForeignTableRefused(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	c, err := nft.New(nft.WithNetNSFd(tp.PrxFD))
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nft.Table{Name: "test", Family: nft.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{TableName: "test", NetNS: tp.PrxFD})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), nil); !errors.Is(err, ErrForeignTable) {
		t.Fatalf("err = %v, want ErrForeignTable", err)
	}
}

// A process without CAP_NET_ADMIN over its network namespace (here: in a
// user namespace of its own, which does not own the network namespace)
// gets ErrNoPermission from New, with the fix.
func TestNoPermission(t *testing.T) {
	t.Parallel()
	netnstest.New(t) // skips where namespaces cannot be made
	attr := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	cmd, out := child(t, "probe", attr)
	line, _ := out.ReadString('\n')
	_ = cmd.Wait()
	if !strings.Contains(line, ErrNoPermission.Error()) || !strings.Contains(line, "setcap cap_net_admin") {
		t.Errorf("child said %q, want ErrNoPermission with the fix", line)
	}
}

// Stop succeeds when the table was already deleted by someone else.
func TestStopAfterExternalDelete(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	m, err := New(Config{TableName: "test", NetNS: tp.PrxFD})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	c, err := nft.New(nft.WithNetNSFd(tp.PrxFD))
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nft.Table{Name: "test", Family: nft.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Errorf("Stop after the table was deleted: %v", err)
	}
}

// Two Managers of one process on one table: the second is refused (the
// owner marker cannot tell them apart); another table name is fine.
func TestSecondManagerInProcessRefused(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	startManager(t, tp)
	m2, err := New(Config{TableName: "test", NetNS: tp.PrxFD})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(context.Background(), nil); !errors.Is(err, ErrTableInUse) {
		t.Fatalf("second Manager: err = %v, want ErrTableInUse", err)
	}
	other, err := New(Config{TableName: "other", NetNS: tp.PrxFD})
	if err != nil {
		t.Fatal(err)
	}
	startManager2(t, other)
}

// Connections made on the proxy host itself to its own address are
// DNATed too (the output hook).
func TestLocalConnectionsForwarded(t *testing.T) {
	t.Parallel()
	tp := netnstest.New(t)
	netnstest.ServeTCP(t, tp.Bkd, ":9000")
	startManager(t, tp, Route{Name: "local", Ports: []PortRange{{8000, 8000}}, Hosts: addrs(netnstest.BkdAddr4), Port: 9000})
	got, err := netnstest.AskTCP(tp.Prx, hostPort(netnstest.PrxAddr4, 8000), 3*time.Second)
	if err != nil || got != "9000 10.200.2.1" {
		t.Errorf("from the proxy host: got %q, %v; want the backend, masqueraded", got, err)
	}
}
