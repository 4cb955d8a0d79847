package h1client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/gosmartproxy/smartproxy/internal/rawsock"
)

// poolKey is what makes backend connections interchangeable: the same
// address, and for TLS the same client config (its roots, verification
// and session cache: the caller's *tls.Config, by identity) and the
// same server name (sent as SNI and verified). A connection is only ever
// reused for requests with its own key, so one verified for one name is
// never given to a request for another.
type poolKey struct {
	addr       string
	tls        *tls.Config // nil: cleartext
	serverName string      // TLS only
}

// connect opens a connection for k: Dial's, and for TLS the handshake
// over it, bounded by HandshakeTimeout, with ALPN offering http/1.1
// only. A Dial error is returned as it is; a failed handshake closes the
// connection and is wrapped.
func (c *Client) connect(ctx context.Context, k poolKey) (net.Conn, error) {
	nc, err := c.dial(ctx, "tcp", k.addr)
	if err != nil {
		return nil, err
	}
	// Raw reads and writes (internal/rawsock): the exchange's calls then
	// never hand the P of a GOMAXPROCS=1 proxy to another thread.
	nc = rawsock.Wrap(nc)
	if k.tls == nil {
		return nc, nil
	}
	// One clone per new connection: the pooled ones need none.
	cfg := k.tls.Clone()
	cfg.ServerName = k.serverName
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(k.addr) // as http.Transport does
	}
	// A backend that would speak h2 is not this client's: offering only
	// http/1.1 makes it answer in HTTP/1.1 or fail the handshake.
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(nc, cfg)
	hctx := ctx
	if c.handshakeTimeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, c.handshakeTimeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("backend %s: TLS handshake: %w", k.addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
		_ = nc.Close()
		return nil, fmt.Errorf("backend %s: TLS: ALPN protocol %q, not http/1.1", k.addr, p)
	}
	return tc, nil
}

// rawConn is the socket under c: the TLS connection's for a *tls.Conn,
// which the prober peeks at and waits on (a TLS record there, a close_notify say, is as
// much a reason to drop the idle connection as cleartext bytes).
func rawConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}
