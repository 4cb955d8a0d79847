package smartproxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nft "github.com/google/nftables"

	"github.com/gosmartproxy/smartproxy/internal/netnstest"
	"github.com/gosmartproxy/smartproxy/nftables"
)

// User-space and kernel routes side by side in one proxy, in a network
// namespace of the test's own: the kernel route is not listened on, its
// traffic is DNATed (client address preserved), its counters show in
// Metrics and NftablesStatus; UpdateRoutes moves it, Stop removes the
// table.
func TestKernelRoutesBesideUserSpace(t *testing.T) {
	if netnstest.Reexec(t, netnstest.OwnNetns) {
		return
	}
	tp := netnstest.NewHere(t)
	netnstest.ServeTCP(t, tp.Bkd, ":9000")
	udp := netnstest.ServeUDP(t, tp.Bkd, ":9000")
	keep := true
	kern := NfTablesRoute("kern", Ports(8000), netnstest.BkdAddr4+":9000", &NfTablesOptions{Protocol: "all", PreserveSourceIP: &keep})
	user := NewRoute("user").Ports(8080).ForwardTo(netnstest.BkdAddr4 + ":9000").Route()
	p, err := New(Options{Routes: []Route{kern, user}, NftablesTable: "sptest"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = p.Stop(context.Background())
		}
	}()
	if got := p.Ports(); !slices.Equal(got, []int{8080}) {
		t.Errorf("Ports() = %v, want only the user-space route's 8080", got)
	}
	if got, err := netnstest.AskTCP(tp.Cli, netnstest.PrxAddr4+":8080", 3*time.Second); err != nil || got != "9000 10.200.2.1" {
		t.Errorf("user-space route: got %q, %v; want the proxy's own connection", got, err)
	}
	if got, err := netnstest.AskTCP(tp.Cli, netnstest.PrxAddr4+":8000", 3*time.Second); err != nil || got != "9000 "+netnstest.CliAddr4 {
		t.Errorf("kernel route: got %q, %v; want the client's address at the backend", got, err)
	}
	if got, err := netnstest.AskUDP(tp.Cli, netnstest.PrxAddr4+":8000", 3*time.Second); err != nil || !strings.HasPrefix(got, "9000 "+netnstest.CliAddr4) {
		t.Errorf("kernel route, UDP: got %q, %v", got, err)
	}
	st, err := p.NftablesStatus(context.Background())
	if err != nil || st.Table != "sptest" || len(st.Routes) != 1 || st.Routes[0].Connections != 2 || st.Routes[0].Rules == 0 {
		t.Errorf("NftablesStatus = %+v, %v; want route kern with 2 connections", st, err)
	}
	if k := p.Metrics().Kernel["kern"]; k.Connections != 2 || k.Bytes == 0 {
		t.Errorf("Metrics().Kernel[kern] = %+v, want 2 connections and bytes", k)
	}

	kern.Match.Ports = Ports(8001)
	if err := p.UpdateRoutes([]Route{kern, user}); err != nil {
		t.Fatal(err)
	}
	if _, err := netnstest.AskTCP(tp.Cli, netnstest.PrxAddr4+":8000", time.Second); err == nil {
		t.Error("port 8000 still forwarded after the route moved to 8001")
	}
	if got, err := netnstest.AskTCP(tp.Cli, netnstest.PrxAddr4+":8001", 3*time.Second); err != nil || !strings.HasPrefix(got, "9000 ") {
		t.Errorf("moved kernel route: got %q, %v", got, err)
	}
	// A kernel route may not share a port with a user-space one.
	clash := NfTablesRoute("clash", Ports(8080), netnstest.BkdAddr4+":9000", nil)
	var re *RouteError
	if err := p.UpdateRoutes([]Route{kern, user, clash}); !errors.As(err, &re) || re.Field != "match.ports" {
		t.Errorf("port clash: err = %v, want a RouteError on match.ports", err)
	}
	stopped = true
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := nft.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTableOfFamily("sptest", nft.TableFamilyINet); err == nil {
		t.Error("the table is still there after Stop")
	}
	_ = udp
}

// Without CAP_NET_ADMIN, New refuses a kernel route naming the field and
// the fix, unless the route asks for forwardingEngineFallback: then it is
// served in user space.
func TestKernelRouteWithoutNetAdmin(t *testing.T) {
	if netnstest.Reexec(t, netnstest.NoNetAdmin) {
		return
	}
	r := NfTablesRoute("kern", Ports(18000), "127.0.0.1:9", nil)
	_, err := New(Options{Routes: []Route{r}})
	var re *RouteError
	if !errors.As(err, &re) || re.Field != "action.forwardingEngine" || !errors.Is(err, nftables.ErrNoPermission) || !strings.Contains(err.Error(), "forwardingEngineFallback") {
		t.Fatalf("err = %v, want a RouteError on action.forwardingEngine wrapping ErrNoPermission", err)
	}
	r.Action.ForwardingEngineFallback = true
	p, err := New(Options{Routes: []Route{r}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Ports(); !slices.Equal(got, []int{18000}) {
		t.Errorf("Ports() = %v, want the fallen-back route listened on", got)
	}
	_ = p.Stop(context.Background())
}

// Defaults.Security with a block list only leaves the allow list empty,
// which user space reads as "everyone": the kernel route must too, and
// still drop the blocked client. (An empty allow list once became an empty
// nft allow set, which dropped every client.)
func TestKernelRouteDefaultsBlockListOnly(t *testing.T) {
	if netnstest.Reexec(t, netnstest.OwnNetns) {
		return
	}
	tp := netnstest.NewHere(t)
	netnstest.ServeTCP(t, tp.Bkd, ":9000")
	open := NfTablesRoute("open", Ports(8000), netnstest.BkdAddr4+":9000", nil)
	shut := NfTablesRoute("shut", Ports(8001), netnstest.BkdAddr4+":9000", nil)
	shut.Security = &RouteSecurity{IPBlockList: []string{netnstest.CliAddr4}}
	p, err := New(Options{Routes: []Route{open, shut}, NftablesTable: "sptest",
		Defaults: Defaults{Security: &RouteSecurity{IPBlockList: []string{"10.9.9.9"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(context.Background()) }()
	if got, err := netnstest.AskTCP(tp.Cli, netnstest.PrxAddr4+":8000", 3*time.Second); err != nil || !strings.HasPrefix(got, "9000 ") {
		t.Errorf("client not on the defaults' block list: got %q, %v; want forwarded", got, err)
	}
	if _, err := netnstest.AskTCP(tp.Cli, netnstest.PrxAddr4+":8001", 500*time.Millisecond); !netnstest.IsTimeout(err) {
		t.Errorf("client on the route's block list: err = %v, want dropped", err)
	}
}

// The kernel settings kernel routes need are read from the kernel at
// Start and reported with their fix in NftablesStatus.
func TestKernelRouteSysctlWarnings(t *testing.T) {
	if netnstest.Reexec(t, netnstest.OwnNetns) {
		return
	}
	tp := netnstest.NewHere(t)
	tp.Sysctl(t, "", "net/ipv4/ip_forward", "0")
	tp.Sysctl(t, "", "net/ipv4/conf/all/route_localnet", "0")
	routes := []Route{
		NfTablesRoute("remote", Ports(8000), netnstest.BkdAddr4+":9000", nil),
		NfTablesRoute("loopback", Ports(8001), "127.0.0.1:9000", nil),
	}
	p, err := New(Options{Routes: routes, NftablesTable: "sptest"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(context.Background()) }()
	st, err := p.NftablesStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(st.Warnings, "\n")
	for _, want := range []string{"sysctl -w net.ipv4.ip_forward=1", "sysctl -w net.ipv4.conf.all.route_localnet=1"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings %q: want %q", got, want)
		}
	}
	tp.Sysctl(t, "", "net/ipv4/ip_forward", "1")
	tp.Sysctl(t, "", "net/ipv4/conf/all/route_localnet", "1")
	if err := p.UpdateRoutes(routes[:1]); err != nil {
		t.Fatal(err)
	}
	if st, err := p.NftablesStatus(context.Background()); err != nil || len(st.Warnings) != 0 {
		t.Errorf("after setting both: warnings %q, %v; want none", st.Warnings, err)
	}
}
