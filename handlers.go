package smartproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// Built-in socket handlers, the Go counterparts of the TS SmartProxy's
// SocketHandlers. Each returns a SocketHandler for RouteAction.SocketHandler.

// maxRequestHead bounds what the HTTP handlers read of a request head, so
// a hostile client cannot make them buffer without limit.
const maxRequestHead = 16 << 10

// requestHeadTimeout bounds the wait for a request head.
const requestHeadTimeout = 30 * time.Second

// EchoHandler writes back everything it reads, until the client closes.
func EchoHandler() SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		_, err := io.Copy(conn, conn)
		return err
	}
}

// ProxyHandler forwards the connection to addr ("host:port"), including
// the bytes read for routing.
func ProxyHandler(addr string) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		var d net.Dialer
		backend, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("proxy handler: %w", err)
		}
		res := forwarding.Pipe(ctx, conn, backend, forwarding.PipeOptions{})
		return res.Err
	}
}

// LineProtocolHandler reads newline-terminated lines (CR LF or LF, at
// most 64 KiB each) and calls fn for each; fn writes any reply to w.
// Returning an error ends the connection (io.EOF ends it quietly).
func LineProtocolHandler(fn func(ctx context.Context, line string, w io.Writer, rc *RouteContext) error) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 0, 4096), 64<<10)
		for sc.Scan() {
			line := strings.TrimSuffix(sc.Text(), "\r")
			if err := fn(ctx, line, conn, rc); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
		return sc.Err()
	}
}

// BlockHandler writes message (if any) and closes the connection.
func BlockHandler(message string) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		if message != "" {
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := io.WriteString(conn, message)
			return err
		}
		return nil
	}
}

// HTTPResponseHandler answers one HTTP request with status, headers and
// body, then closes.
func HTTPResponseHandler(status int, header http.Header, body string) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		if _, err := readRequestHead(conn); err != nil {
			return err
		}
		return writeHTTPResponse(conn, status, header, body)
	}
}

// HTTPBlockHandler answers one HTTP request with status and message as a
// plain-text body, then closes.
func HTTPBlockHandler(status int, message string) SocketHandler {
	if message == "" {
		message = http.StatusText(status)
	}
	h := http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	return HTTPResponseHandler(status, h, message+"\n")
}

// HTTPRedirectHandler answers one HTTP request with a redirect to
// location, a template where {domain} is the request's host (without
// port), {port} the port the client connected to, {path} the request
// path with its query, and {clientIp} the client address; for example
// "https://{domain}{path}". status is 301, 302, 307 or 308 (0 means 301).
func HTTPRedirectHandler(location string, status int) SocketHandler {
	if status == 0 {
		status = http.StatusMovedPermanently
	}
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		req, err := readRequestHead(conn)
		if err != nil {
			return err
		}
		host := req.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			host = rc.Domain
		}
		loc := expandTemplate(location, func(name string) (string, bool) {
			switch name {
			case "domain":
				return host, true
			case "port":
				return strconv.Itoa(rc.Port), true
			case "path":
				return req.URL.RequestURI(), true
			case "clientIp":
				return rc.ClientIP.String(), true
			}
			return "", false
		})
		return writeHTTPResponse(conn, status, http.Header{"Location": {loc}}, "")
	}
}

// HTTPServerHandler serves the connection with h, keeping it alive for as
// many requests as the client sends. It ends when the client closes or the
// proxy shuts down.
func HTTPServerHandler(h http.Handler) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		l := newOneConnListener(conn)
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: requestHeadTimeout,
			ConnState: func(c net.Conn, s http.ConnState) {
				if s == http.StateClosed || s == http.StateHijacked {
					l.finish()
				}
			},
		}
		go func() {
			select {
			case <-ctx.Done():
				_ = srv.Close()
			case <-l.done:
			}
		}()
		err := srv.Serve(l)
		<-l.done
		_ = srv.Close()
		if errors.Is(err, errListenerDone) || errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

var errListenerDone = errors.New("connection served")

// oneConnListener hands one conn to http.Server, then blocks Accept until
// that conn is closed, so Serve returns exactly when the conn is done.
type oneConnListener struct {
	conns chan net.Conn
	done  chan struct{}
	addr  net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conns: make(chan net.Conn, 1), done: make(chan struct{}), addr: c.LocalAddr()}
	l.conns <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errListenerDone
	}
}

func (l *oneConnListener) finish() {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.addr }

// readRequestHead reads one HTTP/1.x request head under a deadline and a
// byte cap.
func readRequestHead(conn net.Conn) (*http.Request, error) {
	_ = conn.SetReadDeadline(time.Now().Add(requestHeadTimeout))
	defer conn.SetReadDeadline(time.Time{})
	req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(conn, maxRequestHead)))
	if err != nil {
		return nil, fmt.Errorf("reading HTTP request: %w", err)
	}
	return req, nil
}

func writeHTTPResponse(conn net.Conn, status int, header http.Header, body string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Connection", "close")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	b.WriteString(body)
	_ = conn.SetWriteDeadline(time.Now().Add(requestHeadTimeout))
	_, err := io.WriteString(conn, b.String())
	return err
}
