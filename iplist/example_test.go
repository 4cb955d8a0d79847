package iplist_test

import (
	"fmt"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/iplist"
)

func ExampleParse() {
	allow, err := iplist.Parse([]string{
		"10.0.0.0/8",
		"192.168.1.*",
		"172.16.0.1-172.16.0.50",
		"2001:db8::1",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(allow)
	for _, s := range []string{"10.1.2.3", "::ffff:192.168.1.7", "172.16.0.51", "2001:db8::1", "2001:db8::2"} {
		fmt.Println(s, allow.Contains(netip.MustParseAddr(s)))
	}

	_, err = iplist.Parse([]string{"10.0.0.300"})
	fmt.Println(err)
	// Output:
	// 10.0.0.0/8, 192.168.1.*, 172.16.0.1-172.16.0.50, 2001:db8::1
	// 10.1.2.3 true
	// ::ffff:192.168.1.7 true
	// 172.16.0.51 false
	// 2001:db8::1 true
	// 2001:db8::2 false
	// ip pattern "10.0.0.300": octet out of range
}

// A nil *List, as a route without a list has, contains nothing; "*"
// contains every address of both families.
func ExampleList_Contains() {
	var none *iplist.List
	all, err := iplist.Parse([]string{"*"})
	if err != nil {
		panic(err)
	}
	ip := netip.MustParseAddr("2001:db8::7")
	fmt.Println(none.Contains(ip), none.Len(), all.Contains(ip))
	// Output:
	// false 0 true
}
