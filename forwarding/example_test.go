package forwarding_test

import (
	"crypto/tls"
	"errors"
	"fmt"
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
