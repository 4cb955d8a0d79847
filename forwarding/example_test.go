package forwarding_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// A router reads the first bytes of a connection until ParseClientHello has the whole
// ClientHello, then picks a backend by SNI without terminating TLS.
func ExampleParseClientHello() {
	client, proxy := net.Pipe()
	done := make(chan struct{})
	go func() { // a TLS client; its handshake fails once we hang up, which is fine here
		defer close(done)
		_ = tls.Client(client, &tls.Config{ServerName: "www.example.org"}).Handshake()
		client.Close()
	}()

	buf := make([]byte, 0, 16<<10)
	var info forwarding.ClientHelloInfo
	for {
		n, err := proxy.Read(buf[len(buf):cap(buf)])
		if err != nil {
			fmt.Println("read:", err)
			return
		}
		buf = buf[:len(buf)+n]
		var need int
		info, need, err = forwarding.ParseClientHello(buf, nil)
		if errors.Is(err, forwarding.ErrNeedMore) && need <= cap(buf) {
			continue // a real router would also bound the wait with a read deadline
		}
		if err != nil {
			fmt.Println("parse:", err)
			return
		}
		break
	}
	proxy.Close()
	<-done
	fmt.Println(string(info.ServerName), info.MaxVersion == tls.VersionTLS13)
	// Output: www.example.org true
}

// A TCP proxy that serves many mostly idle connections starts each pipe with StartPipe and
// an IdleParker: the accepting goroutine is free at once, and a connection that goes quiet
// keeps no goroutine at all until data comes.
func ExampleStartPipe() {
	parker, err := forwarding.NewIdleParker(0, 0) // park after 1 s of silence
	if err != nil {
		fmt.Println(err)
		return
	}
	defer parker.Close() // after the pipes have ended

	backendLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer backendLn.Close()
	go func() { // an echo backend
		c, err := backendLn.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer proxyLn.Close()
	ended := make(chan forwarding.PipeResult, 1)
	go func() {
		client, err := proxyLn.Accept()
		if err != nil {
			return
		}
		backend, err := net.Dial("tcp", backendLn.Addr().String())
		if err != nil {
			client.Close()
			return
		}
		forwarding.StartPipe(context.Background(), client, backend,
			forwarding.PipeOptions{Parker: parker},
			func(r forwarding.PipeResult) { ended <- r })
	}()

	c, _ := net.Dial("tcp", proxyLn.Addr().String())
	_, _ = c.Write([]byte("ping"))
	reply := make([]byte, 4)
	_, _ = io.ReadFull(c, reply)
	c.(*net.TCPConn).CloseWrite() // the echo backend sees EOF and closes
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	r := <-ended
	fmt.Println(string(reply), r.ClientToBackend, r.BackendToClient, r.Err)
	// Output: ping 4 4 <nil>
}
