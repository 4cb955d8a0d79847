package smartproxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/stretchr/testify/require"
)

// forwardedValueRef is forwardedValue as it was written with a
// strings.Builder, the reference the allocation-free version must match.
func forwardedValueRef(pr *proxyReq) string {
	var b strings.Builder
	if ip := pr.rc.ClientIP; ip.IsValid() {
		b.WriteString("for=")
		if ip.Is6() {
			b.WriteString(`"[` + ip.String() + `]"`)
		} else {
			b.WriteString(ip.String())
		}
		b.WriteByte(';')
	}
	if pr.in.Host != "" {
		b.WriteString("host=" + strconv.Quote(pr.in.Host) + ";")
	}
	if pr.in.TLS != nil {
		b.WriteString("proto=https")
	} else {
		b.WriteString("proto=http")
	}
	return b.String()
}

func TestForwardedValueMatchesReference(t *testing.T) {
	ips := []netip.Addr{
		{}, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("203.0.113.250"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
		netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("fe80::1%eth0"),
	}
	hosts := []string{"", "a.test", "rw.test:8080", "[::1]:443", `we"ird\host`, "ünïcode.test", "ctl\x01\x7f",
		strings.Repeat("long-label.", 30) + "test"}
	for _, ip := range ips {
		for _, host := range hosts {
			for _, tlsOn := range []bool{false, true} {
				in := &http.Request{Host: host}
				if tlsOn {
					in.TLS = &tls.ConnectionState{}
				}
				pr := &proxyReq{in: in, rc: RouteContext{ClientIP: ip}}
				require.Equal(t, forwardedValueRef(pr), forwardedValue(pr), "ip %v host %q tls %v", ip, host, tlsOn)
			}
		}
	}
}

// TestSetForwardedMatchesSetXForwarded: the forwarding headers are what
// httputil's SetXForwarded plus X-Real-IP and Forwarded set by hand give,
// and appending to one of them does not touch the others (they share a
// backing array).
func TestSetForwardedMatchesSetXForwarded(t *testing.T) {
	for _, remote := range []string{"127.0.0.1:5555", "[2001:db8::7]:80", "not-an-addr", ""} {
		for _, tlsOn := range []bool{false, true} {
			in := &http.Request{Host: "rw.test:8080", RemoteAddr: remote, Header: http.Header{}}
			if tlsOn {
				in.TLS = &tls.ConnectionState{}
			}
			pr := &proxyReq{in: in, rc: RouteContext{ClientIP: netip.MustParseAddr("192.0.2.1")}}
			ref := &httputil.ProxyRequest{In: in, Out: &http.Request{Header: http.Header{"A": {"b"}}}}
			ref.SetXForwarded()
			if xff := ref.Out.Header["X-Forwarded-For"]; xff != nil {
				ref.Out.Header.Set("X-Real-IP", xff[0])
			}
			ref.Out.Header.Set("Forwarded", forwardedValueRef(pr))
			out := &http.Request{Header: http.Header{"A": {"b"}}}
			setForwarded(out, in, pr)
			require.Equal(t, ref.Out.Header, out.Header, "remote %q tls %v", remote, tlsOn)

			want := out.Header.Clone()
			out.Header.Add("X-Forwarded-Host", "second")
			out.Header.Add("X-Forwarded-For", "second")
			require.Equal(t, want["X-Forwarded-Proto"], out.Header["X-Forwarded-Proto"])
			require.Equal(t, want["X-Real-Ip"], out.Header["X-Real-Ip"], "X-Real-IP shares X-Forwarded-For's value")
			require.Equal(t, want["Forwarded"], out.Header["Forwarded"])
			require.Equal(t, append(want["X-Forwarded-Host"], "second"), out.Header["X-Forwarded-Host"])
		}
	}
}

func TestForwardedAllocations(t *testing.T) {
	in := &http.Request{Host: "rw.test:8080", RemoteAddr: "127.0.0.1:5555", Header: http.Header{}}
	pr := &proxyReq{in: in, rc: RouteContext{ClientIP: netip.MustParseAddr("2001:db8::7")}}
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = forwardedValue(pr) }), "forwardedValue: only the string")
	out := &http.Request{Header: make(http.Header, 8)}
	require.Equal(t, 2.0, testing.AllocsPerRun(100, func() { setForwarded(out, in, pr) }),
		"setForwarded: one array for the four values, and the Forwarded string")
}

// TestBufferPoolPutDoesNotAllocate: the reverse proxy's buffers go back
// to the pool as array pointers, without an allocation per Put, and come
// back out whole.
func TestBufferPoolPutDoesNotAllocate(t *testing.T) {
	var bp bufferPool
	buf := bp.Get()
	require.Len(t, buf, 32<<10)
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() { bp.Put(buf) }))
	bp.Put(make([]byte, 10)) // not one of ours: dropped, no panic
	for range 10 {
		b := bp.Get()
		require.Len(t, b, 32<<10)
		bp.Put(b)
	}
}

type rwBody struct {
	io.Reader
	bytes.Buffer
	closes int
}

func (b *rwBody) Read(p []byte) (int, error)  { return b.Reader.Read(p) }
func (b *rwBody) Write(p []byte) (int, error) { return b.Buffer.Write(p) }
func (b *rwBody) Close() error                { b.closes++; return nil }

// TestLeasedBodyReleasesOnce: the lease embedded in the response body
// counts the request as active until the body is closed, however often
// and from however many goroutines Close is called; a released lease can
// be taken again (the retry path); an upgraded body stays writable. The
// lease and body cost no allocation beyond the leasedBody itself.
func TestLeasedBodyReleasesOnce(t *testing.T) {
	p, err := New(Options{Logger: testLogger()})
	require.NoError(t, err)
	const addr = "10.9.9.8:80"
	active := func() int64 {
		for _, s := range p.TargetHealth() {
			if s.Addr == addr {
				return s.ActiveConnections
			}
		}
		return 0
	}

	lb := new(leasedBody)
	p.health.Acquire(&lb.Lease, addr)
	require.EqualValues(t, 1, active())
	lb.Release() // a failed attempt
	lb.Release()
	require.EqualValues(t, 0, active())
	p.health.Acquire(&lb.Lease, addr) // the next attempt reuses it
	p.health.Acquire(new(balance.Lease), addr)
	require.EqualValues(t, 2, active())

	body := lb.wrap(io.NopCloser(strings.NewReader("x")))
	_, isRW := body.(io.ReadWriteCloser)
	require.False(t, isRW)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { _ = body.Close() })
	}
	wg.Wait()
	require.EqualValues(t, 1, active(), "eight Closes released one lease")

	rw := &rwBody{Reader: strings.NewReader("y")}
	lb2 := new(leasedBody)
	p.health.Acquire(&lb2.Lease, addr)
	body = lb2.wrap(rw)
	w, ok := body.(io.ReadWriteCloser)
	require.True(t, ok, "an upgrade's body stays writable")
	_, err = w.Write([]byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", rw.String())
	require.NoError(t, w.Close())
	require.NoError(t, w.Close())
	require.Equal(t, 2, rw.closes)
	require.EqualValues(t, 1, active())

	nop := io.NopCloser(strings.NewReader(""))
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() {
		p.health.Acquire(&lb.Lease, addr)
		_ = lb.wrap(nop).Close()
	}), "acquire, wrap and release allocate nothing")
}

// BenchmarkConnectEcho is connrate in process: connect through the proxy,
// echo one byte, close. It shows the per-connection setup cost (the
// keep-alive options, set once on the listener on Linux). The client
// dials without keep-alive so that it adds no setsockopt of its own.
func BenchmarkConnectEcho(b *testing.B) {
	be := startBackend(b, "127.0.0.1:0", echo)
	port := closedPort(b)
	// The proxy's own listener (no Options.Listen), so its keep-alive
	// settings are part of what is measured.
	startTestProxy(b, nil, Options{ListenAddress: "127.0.0.1", Routes: []Route{plainRoute("bench", port, be.addr())}})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b.ReportAllocs()
	one := make([]byte, 1)
	d := net.Dialer{KeepAlive: -1}
	for b.Loop() {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}
