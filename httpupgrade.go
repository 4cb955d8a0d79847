package smartproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"golang.org/x/net/http/httpguts"
)

// Upgraded streams (a 101 Switching Protocols: WebSocket and the like) on
// both HTTP stacks: the fast path hands every upgrade request to net/http's
// server (fastEligibleHead), so this is the one way an upgrade takes.
//
// The request goes out through ReverseProxy as any other (route, checks,
// Rewrite, hop-by-hop fields, the transport and its retries), but its 101
// is relayed here rather than by ReverseProxy's own copier, which ended
// both directions at the first EOF (a client that half-closed never got
// the backend's answer; the 101's body has no CloseWrite it could find)
// and dropped the bytes the server had read behind the request head.
// modifyResponse takes the 101 from ReverseProxy (takeUpgrade, the
// checks ReverseProxy would make), and act relays it once ReverseProxy
// has returned (relayUpgrade): forwarding.Pipe copies each direction on
// its own, passes an EOF on as a half-close, bounds the direction left
// with the half-close timeout, and its write timeout is the proxy's.

// errUpgradeTaken is modifyResponse's answer to a 101 it took for
// relayUpgrade: ReverseProxy then calls proxyError, which writes nothing.
var errUpgradeTaken = errors.New("upgrade taken for the proxy's relay")

// upgradeType is what a head's Upgrade field says when its Connection
// field lists "upgrade" ("" otherwise), as ReverseProxy reads it.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// takeUpgrade checks a backend's 101 to pr's request as ReverseProxy
// would (a printable protocol, the one the request asked for) and keeps
// it for relayUpgrade; an error other than errUpgradeTaken is a bad
// response (502). A 101 to a request that asked for no upgrade is
// refused, as internal/h1client refuses it.
func takeUpgrade(resp *http.Response, pr *proxyReq) error {
	reqType, resType := upgradeType(resp.Request.Header), upgradeType(resp.Header)
	switch {
	case reqType == "":
		return errors.New("backend switched protocols without an upgrade request")
	case !printableASCII(resType):
		return fmt.Errorf("backend tried to switch to invalid protocol %q", resType)
	case !strings.EqualFold(reqType, resType):
		return fmt.Errorf("backend tried to switch protocol %q when %q was requested", resType, reqType)
	}
	ub, ok := resp.Body.(*upgradedBackend)
	if !ok || ub.Conn == nil {
		return fmt.Errorf("internal error: 101 switching protocols with a %T body", resp.Body)
	}
	ub.head = resp
	resp.Body = http.NoBody // ReverseProxy closes the body of a response it does not relay
	pr.upgraded = ub
	return errUpgradeTaken
}

// printableASCII reports a string of printable ASCII only (RFC 20 4.2),
// as ReverseProxy checks a backend's Upgrade.
func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// relayUpgrade answers the client with the 101 takeUpgrade kept and
// relays the stream until both directions have ended, the half-close
// timeout ended the one left, or the connection is killed.
func (h *httpLayer) relayUpgrade(w http.ResponseWriter, pr *proxyReq) {
	backend := pr.upgraded
	resp := backend.head
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = backend.Close()
		h.proxyError(w, pr.in, fmt.Errorf("hijack for the upgrade: %w", err))
		return
	}
	// The head as ReverseProxy writes it: the writer's fields, then the
	// backend's (action.headers.response applied).
	hdr := w.Header()
	for k, vv := range resp.Header {
		hdr[k] = append(hdr[k], vv...)
	}
	resp.Header, resp.Body = hdr, nil
	if err = resp.Write(brw); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = backend.Close()
		_ = conn.Close()
		h.px.logConn("upgrade: writing the 101 failed", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName, "err", err)
		return
	}
	client := conn
	if n := brw.Reader.Buffered(); n > 0 {
		// Sent behind the request head and read with it: they go first.
		b, _ := brw.Reader.Peek(n)
		client = &fastReplayConn{Conn: conn, pending: append([]byte(nil), b...)}
	}
	// The connection manager kills the connection by closing its
	// sockets: the backend's too from now on, or a direction waiting on
	// the backend after the client's half-close would outlive the kill
	// until the half-close timeout.
	if owner := pr.hc.owner; owner != nil && !owner.setBackend(backend) {
		_ = conn.Close()
		return
	}
	wt := h.px.writeTimeout
	if wt == 0 {
		wt = -1 // none
	}
	res := forwarding.Pipe(pr.in.Context(), client, backend, forwarding.PipeOptions{
		HalfCloseTimeout: h.px.halfCloseTimeout,
		WriteTimeout:     wt,
	})
	h.px.logConn("upgraded stream closed", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName,
		"bytesIn", res.ClientToBackend, "bytesOut", res.BackendToClient, "err", res.Err)
}

// upgradedBackend is the backend side of an upgraded stream, as
// forwarding.Pipe takes it: reads and writes go through the 101's body,
// which yields first what the transport read behind the head, and whose
// Close ends the target's lease; deadlines, addresses and the half-close
// are the connection's. It has no Unwrap: Pipe must not read the socket
// beneath past the body's buffer.
type upgradedBackend struct {
	net.Conn                    // the transport's connection (a headTap)
	body     io.ReadWriteCloser // the 101's body (leasedRWBody)
	head     *http.Response     // the 101 (its Body taken), set by takeUpgrade
}

func (b *upgradedBackend) Read(p []byte) (int, error)  { return b.body.Read(p) }
func (b *upgradedBackend) Write(p []byte) (int, error) { return b.body.Write(p) }

// Close closes the connection and ends the lease.
func (b *upgradedBackend) Close() error { return b.body.Close() }

// CloseWrite half-closes the backend connection.
func (b *upgradedBackend) CloseWrite() error { return forwarding.CloseWrite(b.Conn) }
