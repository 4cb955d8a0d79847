package smartproxy_test

import (
	"github.com/gosmartproxy/smartproxy"
)

// NfTablesRoute is the TS createNfTablesRoute: the kernel DNATs the ports
// to the target (here UDP and TCP, keeping the client's address), and the
// proxy does not listen on them.
func ExampleNfTablesRoute() {
	keep := true
	r := smartproxy.NfTablesRoute("game", smartproxy.PortSpec{{From: 27015, To: 27016}}, "10.0.0.5",
		&smartproxy.NfTablesOptions{Protocol: "all", PreserveSourceIP: &keep, MaxRate: "100/second"})
	r.Security = &smartproxy.RouteSecurity{IPAllowList: []string{"192.168.0.0/16"}}
	printJSON(r)
	// Output:
	// {"name":"game","match":{"ports":{"from":27015,"to":27016}},"action":{"type":"forward","targets":[{"host":"10.0.0.5","port":"preserve"}],"forwardingEngine":"nftables","nftables":{"preserveSourceIP":true,"protocol":"all","maxRate":"100/second"}},"security":{"ipAllowList":["192.168.0.0/16"]}}
}
