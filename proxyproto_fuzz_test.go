package smartproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// FuzzProxyHeader fuzzes the receive path as serve runs it: the header is
// read from a PeekConn over a real connection (net.Pipe) and must never
// panic, never consume a byte past its end, and never yield a client
// address that names no client.
func FuzzProxyHeader(f *testing.F) {
	for _, seed := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\nGET / HTTP/1.1\r\n\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 6000 443\r\n\x16\x03\x01"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
		[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
		[]byte("PROXY TCP4 " + string(bytes.Repeat([]byte("1"), 120))),
		[]byte("PROXX"),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x00, 0x00, 0x00),
		append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0xff, 0xff),
		append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0x00, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x01, 0x00, 0x05),
	} {
		f.Add(seed)
	}
	for _, v := range []byte{1, 2} {
		h := proxyproto.HeaderProxyFromAddrs(v, tcpAddr("198.51.100.7:5555"), tcpAddr("192.0.2.1:443"))
		if v == 2 {
			_ = h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte("h2")}, {Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("a.example.com")},
				{Type: proxyproto.PP2_TYPE_SSL, Value: []byte{1, 0, 0, 0, 0, 0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '3'}}})
		}
		b, _ := h.Format()
		f.Add(append(b, "after"...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = client.Write(data)
			_ = client.Close()
		}()
		peek := forwarding.NewPeekConn(server)
		_ = peek.SetReadDeadline(time.Now().Add(2 * time.Second))
		h, err := readProxyHeader(peek)
		if err != nil {
			if proxySignature(data) == 0 && !errors.Is(err, errNoProxyHeader) && len(data) > 0 {
				t.Fatalf("no signature but %v", err)
			}
			_ = server.Close()
			<-done
			peek.Release()
			return
		}
		rest, _ := io.ReadAll(peek)
		<-done
		_ = server.Close()
		n := len(data) - len(rest)
		if n <= 0 || !bytes.Equal(rest, data[n:]) {
			t.Fatalf("consumed %d bytes; rest %q is not what followed", n, rest)
		}
		if proxySignature(data[:n]) < 1 {
			t.Fatalf("a header without a signature: %q", data[:n])
		}
		if !h.Local && (!h.Source.IsValid() || h.Source.Addr().IsUnspecified() || h.Source.Port() == 0 || h.Source.Addr().Is4In6()) {
			t.Fatalf("header names no client: %+v", h)
		}
	})
}

// BenchmarkProxyHeader measures framing and parsing one header (what a
// trusted sender's connection costs before routing), v1 and v2 with TLVs.
func BenchmarkProxyHeader(b *testing.B) {
	v2 := proxyproto.HeaderProxyFromAddrs(2, tcpAddr("198.51.100.7:5555"), tcpAddr("192.0.2.1:443"))
	_ = v2.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte("h2")}, {Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("a.example.com")}})
	v2b, _ := v2.Format()
	for _, bc := range []struct {
		name string
		data []byte
	}{{"v1", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")}, {"v2-tlvs", v2b}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n, err := frameProxyHeader(bc.data)
				if err != nil || n != len(bc.data) {
					b.Fatal(n, err)
				}
				if _, err := parseProxyHeader(bc.data[:n]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
