package smartproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// PROXY protocol interop with a real HAProxy (/usr/sbin/haproxy, which
// .ci/run installs): HAProxy as the sender in front of the proxy, and as
// the receiver behind it.

const haproxyPath = "/usr/sbin/haproxy"

// startHAProxy runs haproxy with the config build makes for n free ports
// (after a global section with noreuseport, so a leftover process cannot
// share its ports silently) as a child process, waits until it holds
// every one, and kills it when the test ends. It returns the ports. A
// port that a parallel test took between closedPort and haproxy's bind
// (EADDRINUSE) is a new try with new ports, up to five.
func startHAProxy(t *testing.T, n int, build func(ports []int) string) []int {
	t.Helper()
	if _, err := os.Stat(haproxyPath); err != nil {
		t.Skipf("haproxy not installed (%v): apt-get install haproxy, as .ci/run does", err)
	}
	for try := 1; ; try++ {
		ports := make([]int, n)
		for i := range ports {
			ports[i] = closedPort(t)
		}
		out, ok := runHAProxy(t, build(ports), ports)
		if ok {
			return ports
		}
		if try == 5 || !strings.Contains(out, "Address already in use") {
			t.Fatalf("haproxy did not start: %s", out)
		}
	}
}

// runHAProxy starts haproxy with cfg and waits until it holds ports; ok
// false with its output when it exited first.
func runHAProxy(t *testing.T, cfg string, ports []int) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "haproxy.cfg")
	cfg = "global\n    noreuseport\ndefaults\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n" + cfg
	require.NoError(t, os.WriteFile(file, []byte(cfg), 0o600))
	var out syncBuffer
	cmd := exec.Command(haproxyPath, "-db", "-f", file)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Ready when every port is taken: binding it fails (no probe
	// connection, which HAProxy would proxy or log).
	for _, port := range ports {
		gone := false
		require.Eventually(t, func() bool {
			select {
			case <-exited:
				gone = true
				return true
			default:
			}
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err == nil {
				_ = ln.Close()
				return false
			}
			return errors.Is(err, syscall.EADDRINUSE)
		}, 5*time.Second, 20*time.Millisecond, "haproxy did not bind port %d: %s", port, &out)
		if gone {
			return out.String(), false
		}
	}
	return "", true
}

// HAProxy sends (send-proxy, send-proxy-v2, send-proxy-v2-ssl): the
// proxy reports the client that connected to HAProxy, and what the SSL
// TLV says.
func TestProxyProtocolFromHAProxy(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	ppProxy(t, lp, []string{"127.0.0.1"}, handlerRoute("h", port))
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "cert.pem")
	spec := testCertPEM(t)
	require.NoError(t, os.WriteFile(pemFile, []byte(spec.Cert+spec.Key), 0o600))
	ports := startHAProxy(t, 4, func(ports []int) string {
		v1, v2, v2ssl, v2tls := ports[0], ports[1], ports[2], ports[3]
		cfg := ""
		for _, l := range []struct {
			name string
			port int
			bind string
			send string
		}{
			{"v1", v1, "", "send-proxy"},
			{"v2", v2, "", "send-proxy-v2"},
			{"v2ssl", v2ssl, "", "send-proxy-v2-ssl"},
			{"v2tls", v2tls, " ssl crt " + pemFile, "send-proxy-v2-ssl"},
		} {
			cfg += fmt.Sprintf("listen %s\n    mode tcp\n    bind 127.0.0.1:%d%s\n    server s 127.0.0.1:%d %s\n", l.name, l.port, l.bind, port, l.send)
		}
		return cfg
	})
	v1, v2, v2ssl, v2tls := ports[0], ports[1], ports[2], ports[3]
	for _, tc := range []struct {
		port int
		tls  bool
		want string
	}{
		{v1, false, " v1 local=false"},
		{v2, false, " v2 local=false"},
		{v2ssl, false, " ssl=false/"},
		{v2tls, true, " ssl=true/TLSv1.3"},
	} {
		var c net.Conn = dialFrom(t, "127.0.0.7", tc.port)
		local := c.LocalAddr().String()
		if tc.tls {
			tc := tls.Client(c, insecureTLS("a.example.com"))
			require.NoError(t, tc.Handshake())
			c = tc
		}
		_, err := io.WriteString(c, "hi\n")
		require.NoError(t, err)
		line := ppLine(t, c)
		require.True(t, strings.HasPrefix(line, "client="+local+" remote="+local+" "), line)
		require.Contains(t, line, tc.want)
		require.Equal(t, "hi", ppLine(t, c))
	}
}

// HAProxy receives (accept-proxy): it answers with the source address
// it took from the header, which must be the client of the proxy.
func TestProxyProtocolToHAProxy(t *testing.T) {
	t.Parallel()
	hp := startHAProxy(t, 1, func(ports []int) string {
		return fmt.Sprintf("frontend pp\n    mode http\n    bind 127.0.0.1:%d accept-proxy\n"+
			"    http-request return status 200 content-type text/plain lf-string \"%%[src]:%%[src_port]\\n\"\n", ports[0])
	})[0]
	lp := newListenerPool(t)
	p1, p2 := lp.port(t), lp.port(t)
	r1 := NewRoute("v1").Ports(p1).ForwardTo("127.0.0.1:" + strconv.Itoa(hp)).Route()
	r1.Action.SendProxyProtocol = true
	r2 := NewRoute("v2").Ports(p2).ForwardTo("127.0.0.1:" + strconv.Itoa(hp)).Route()
	r2.Action.SendProxyProtocol, r2.Action.ProxyProtocolVersion = true, 2
	startTestProxy(t, lp, Options{Routes: []Route{r1, r2}})
	for _, port := range []int{p1, p2} {
		c := dialFrom(t, "127.0.0.9", port)
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		require.NoError(t, err)
		_, resp := awaitClose(t, c, 5*time.Second)
		require.True(t, strings.HasSuffix(string(resp), "\r\n\r\n"+c.LocalAddr().String()+"\n"), "%s", resp)
	}
}
