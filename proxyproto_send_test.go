package smartproxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// startPPBackend is a backend that requires a PROXY header, read with
// go-proxyproto as a real receiver would, answers one line describing
// it and then echoes.
func startPPBackend(t *testing.T) *backend {
	return startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			_, _ = fmt.Fprintf(c, "no header: %v\n", err)
			return
		}
		line := fmt.Sprintf("v%d src=%v dst=%v", h.Version, h.SourceAddr, h.DestinationAddr)
		tlvs, _ := h.TLVs()
		for _, tlv := range tlvs {
			line += fmt.Sprintf(" tlv%d=%s", tlv.Type, tlv.Value)
		}
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			return
		}
		_, _ = io.Copy(c, br)
	})
}

func TestProxyProtocolSend(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	be := startPPBackend(t)
	v1, v2, tgt, pass, term := lp.port(t), lp.port(t), lp.port(t), lp.port(t), lp.port(t)
	r1 := NewRoute("v1").Ports(v1).ForwardTo(be.addr()).Route()
	r1.Action.SendProxyProtocol = true
	r2 := NewRoute("v2").Ports(v2).ForwardTo(be.addr()).Route()
	r2.Action.SendProxyProtocol, r2.Action.ProxyProtocolVersion = true, 2
	rt := NewRoute("target").Ports(tgt).ForwardTo(be.addr()).Route()
	rt.Action.Targets[0].SendProxyProtocol, rt.Action.Targets[0].ProxyProtocolVersion = true, 2
	rp := NewRoute("pass").Ports(pass).Domains("a.example.com").TLSPassthrough().ForwardTo(be.addr()).Route()
	rp.Action.SendProxyProtocol, rp.Action.ProxyProtocolVersion = true, 2
	rterm := NewRoute("term").Ports(term).Domains("a.example.com").ForwardTo(be.addr()).Route()
	rterm.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	rterm.Action.SendProxyProtocol = true
	startTestProxy(t, lp, Options{Routes: []Route{r1, r2, rt, rp, rterm}, Certificates: testCertStore(t)})

	for _, tc := range []struct {
		port int
		want string
	}{{v1, "v1 src=127.0.0.5:"}, {v2, "v2 src=127.0.0.5:"}, {tgt, "v2 src=127.0.0.5:"}} {
		c := dialFrom(t, "127.0.0.5", tc.port)
		_, err := io.WriteString(c, "ping\n")
		require.NoError(t, err)
		line := ppLine(t, c)
		require.True(t, strings.HasPrefix(line, tc.want+strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port)+" dst=127.0.0.1:"+strconv.Itoa(tc.port)), line)
		require.Equal(t, "ping", ppLine(t, c), "the client's bytes follow the header")
	}

	// Passthrough: the SNI goes as the authority TLV, the hello after
	// the header.
	c := dialFrom(t, "127.0.0.5", pass)
	hello := tlstest.ToRecords(buildHello("a.example.com", 0), 1<<14)
	_, err := c.Write(hello)
	require.NoError(t, err)
	line := ppLine(t, c)
	require.Contains(t, line, "v2 src=127.0.0.5:")
	require.Contains(t, line, "tlv2=a.example.com")
	got, err := readN(c, len(hello), 3*time.Second)
	require.NoError(t, err)
	require.Equal(t, hello, got)

	// Terminate without HTTP features: the decrypted stream is TCP, with
	// the header first, even when it carries HTTP.
	tc, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(term), insecureTLS("a.example.com", "h2", "http/1.1"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = tc.Close() })
	require.Empty(t, tc.ConnectionState().NegotiatedProtocol, "no ALPN: the stream is forwarded as TCP")
	_, err = io.WriteString(tc, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	require.NoError(t, err)
	require.Contains(t, ppLine(t, tc), "v1 src=127.0.0.1:")
	require.Equal(t, "GET / HTTP/1.1\r", ppLine(t, tc))
}

// A chain: client → smartproxy A (sends v2) → smartproxy B (trusts A)
// → backend. The backend sees the original client (127.0.0.5) in
// X-Forwarded-For from B's HTTP route, and in the PROXY header from B's
// TCP route (which resends what it received: chains keep the address).
func TestProxyProtocolChain(t *testing.T) {
	t.Parallel()
	lpA, lpB := newListenerPool(t), newListenerPool(t)
	httpBE, tcpBE := echoBackend(t, "be"), startPPBackend(t)
	bHTTP, bTCP := lpB.port(t), lpB.port(t)
	startTestProxy(t, lpB, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, Routes: []Route{
		httpRouteOn("b-http", bHTTP, httpBE.addr(), "a"),
		func() Route {
			r := NewRoute("b-tcp").Ports(bTCP).ForwardTo(tcpBE.addr()).Route()
			r.Action.SendProxyProtocol = true
			return r
		}(),
	}})
	aHTTP, aTCP := lpA.port(t), lpA.port(t)
	sendV2 := func(r Route) Route {
		r.Action.SendProxyProtocol, r.Action.ProxyProtocolVersion = true, 2
		return r
	}
	startTestProxy(t, lpA, Options{Routes: []Route{
		sendV2(NewRoute("a-http").Ports(aHTTP).ForwardTo("127.0.0.1:" + strconv.Itoa(bHTTP)).Route()),
		sendV2(NewRoute("a-tcp").Ports(aTCP).ForwardTo("127.0.0.1:" + strconv.Itoa(bTCP)).Route()),
	}})

	c := dialFrom(t, "127.0.0.5", aHTTP)
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	_, resp := awaitClose(t, c, 3*time.Second)
	require.Contains(t, string(resp), `"X-Forwarded-For":["127.0.0.5"]`)

	c = dialFrom(t, "127.0.0.5", aTCP)
	_, err = io.WriteString(c, "x\n")
	require.NoError(t, err)
	line := ppLine(t, c)
	require.True(t, strings.HasPrefix(line, "v1 src="+c.LocalAddr().String()+" dst=127.0.0.1:"+strconv.Itoa(aTCP)),
		"B names the original client and the address it connected to on A: %s", line)
}

func TestProxyProtocolSendValidation(t *testing.T) {
	t.Parallel()
	send := func(r Route) Route { r.Action.SendProxyProtocol = true; return r }
	withPath := send(NewRoute("path").Ports(8080).ForwardTo("127.0.0.1:1").Route())
	withPath.Match.Path = "/api/*"
	badVersion := send(NewRoute("ver").Ports(8081).ForwardTo("127.0.0.1:1").Route())
	badVersion.Action.ProxyProtocolVersion = 3
	secondTarget := NewRoute("second").Ports(8082).ForwardTo("127.0.0.1:1").Route()
	secondTarget.Action.Targets = append(secondTarget.Action.Targets, Target{Host: StringList{"127.0.0.1"}, Port: 2, SendProxyProtocol: true})
	handler := handlerRoute("handler", 8083)
	handler.Action.SendProxyProtocol = true
	for _, tc := range []struct {
		routes []Route
		field  string
		want   string
	}{
		{[]Route{withPath}, "action.sendProxyProtocol", "needs a TCP route"},
		{[]Route{send(httpRouteOn("host", 8080, "127.0.0.1:1", "a.example.com"))}, "action.sendProxyProtocol", "needs a TCP route"},
		{[]Route{badVersion}, "action.proxyProtocolVersion", "must be 1 or 2, got 3"},
		{[]Route{secondTarget}, "action.sendProxyProtocol", "only the route's first target"},
		{[]Route{handler}, "action.sendProxyProtocol", "needs a forward action"},
		{[]Route{send(NewRoute("tcp").Ports(8080).ForwardTo("127.0.0.1:1").Route()), httpRouteOn("web", 8080, "127.0.0.1:1", "a.example.com")},
			"action.sendProxyProtocol", "port 8080 also serves HTTP routes"},
	} {
		_, err := New(Options{Routes: tc.routes})
		var re *RouteError
		require.True(t, errors.As(err, &re), "%v", err)
		require.Equal(t, tc.field, re.Field)
		require.ErrorContains(t, err, tc.want)
	}
	// The proxy-wide default leaves HTTP routes as they are.
	_, err := New(Options{SendProxyProtocol: true, Routes: []Route{httpRouteOn("web", 8080, "127.0.0.1:1", "a.example.com"), NewRoute("tcp").Ports(8080).ForwardTo("127.0.0.1:1").Route()}})
	require.NoError(t, err)
}
