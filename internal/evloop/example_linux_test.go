//go:build linux

package evloop_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

// Forward every connection of a loopback port to an upper-casing backend.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		for i := range b {
			b[i] -= 'a' - 'A'
		}
		_, _ = c.Write(b)
	}()
	srv, err := evloop.Start(evloop.Config{
		Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		Target: ln.Addr().(*net.TCPAddr).AddrPort(),
	})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(srv.Addr()))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("hello"))
	_ = c.CloseWrite() // the backend answers after the client's EOF: half-close passes through
	reply, _ := io.ReadAll(c)
	fmt.Println(string(reply))
	// Output: HELLO
}
