package smartproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/iplist"
)

// Receiving the PROXY protocol (v1 text, v2 binary with TLVs). The trust
// rule: a header is read only from a trusted sender (Options.ProxyIPs,
// matched on the socket address), and its source address then becomes
// the connection's client address everywhere, because serve reads the
// header before anything else looks at the client (admission, per-IP
// limits, metrics, matching, logs, templates, X-Forwarded-For,
// RouteContext). Nothing an untrusted client sends is ever parsed as a
// header: on ports that read the first bytes anyway (TLS or HTTP
// routing), one that starts with a PROXY signature is closed as a
// protocol error before any dial.
//
// Framing (where the header ends) is ours and strict, so that the
// header is consumed from the PeekConn exactly and the bytes after it
// (a ClientHello, a request) stay buffered for the routing that follows
// and are replayed to the backend before the copy splices the bare
// socket; parsing is github.com/pires/go-proxyproto's, on exactly the
// framed bytes.

// ProxyProtocolMode says whether a trusted sender must send a PROXY
// header (Options.ProxyProtocol).
type ProxyProtocolMode string

// The PROXY protocol modes.
const (
	// ProxyProtocolRequired closes a trusted sender's connection that
	// does not start with a header. It is the default ("").
	ProxyProtocolRequired ProxyProtocolMode = "required"
	// ProxyProtocolOptional lets a trusted sender's connection start
	// without a header; its socket address is then the client address.
	// The proxy waits for the first bytes either way, so protocols where
	// the server speaks first need the header from such senders.
	ProxyProtocolOptional ProxyProtocolMode = "optional"
)

// DefaultProxyHeaderTimeout is the default Options.ProxyHeaderTimeout.
const DefaultProxyHeaderTimeout = 10 * time.Second

// RejectProxyProtocol counts connections closed for their PROXY header:
// one from an untrusted sender, a malformed one, or none from a trusted
// sender that must send it.
const RejectProxyProtocol RejectReason = "proxy-protocol"

// maxProxyHeaderBytes caps a header: a v2 header's length field may not
// exceed the library's MaxV2HeaderSize (4 KiB of addresses and TLVs);
// a v1 header is at most 107 bytes.
const (
	maxV1HeaderBytes = 107
	v2FixedBytes     = 16
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = proxyproto.SIGV2

	errNoProxyHeader = errors.New("no PROXY header")
	// errLeftBeforeHeader: the sender closed without sending a byte, as
	// load balancers' TCP health checks do; not a refusal.
	errLeftBeforeHeader = errors.New("closed before sending anything")
)

// ProxyHeader is what a trusted sender's PROXY header said
// (RouteContext.ProxyHeader).
type ProxyHeader struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local is set for a LOCAL command (v2) or "PROXY UNKNOWN" (v1), as
	// health checks send, and for address families other than TCP: the
	// socket address is the client address then, and Source and
	// Destination are zero.
	Local bool
	// Source is the original client; Destination the address it
	// connected to (IPv4-mapped IPv6 unmapped).
	Source, Destination netip.AddrPort
	// ALPN and Authority are the v2 TLVs of those names ("" when absent):
	// the protocol the sender negotiated, the host name the client asked
	// for (SNI).
	ALPN, Authority string
	// UniqueID is the v2 PP2_TYPE_UNIQUE_ID TLV (at most 128 bytes).
	UniqueID []byte
	// SSL is the v2 PP2_TYPE_SSL TLV; nil when absent.
	SSL *ProxySSL
}

// ProxySSL is the TLS information of a v2 header (HAProxy's
// send-proxy-v2-ssl).
type ProxySSL struct {
	// ClientSSL: the client connected over TLS.
	ClientSSL bool
	// Verified: the client presented a certificate that verified.
	Verified bool
	// Version, Cipher and ClientCN are the sub-TLVs ("" when absent).
	Version, Cipher, ClientCN string
}

// proxyReceiver is the compiled receiving side; nil when off.
type proxyReceiver struct {
	trusted  *iplist.List
	optional bool
	timeout  time.Duration

	// stopping ends pending header reads when Stop begins: a connection
	// that has not sent its header has no request in flight to drain.
	stopOnce sync.Once
	stopping context.Context
}

// stopCtx returns a context cancelled when p begins to stop, started by
// the first header read (so a proxy that never receives one runs no
// watcher).
func (in *proxyReceiver) stopCtx(p *Proxy) context.Context {
	in.stopOnce.Do(func() {
		ctx, cancel := context.WithCancel(p.baseCtx)
		in.stopping = ctx
		go func() {
			defer cancel()
			select {
			case <-p.draining:
			case <-ctx.Done():
			}
		}()
	})
	return in.stopping
}

func newProxyReceiver(o *Options) *proxyReceiver {
	if !o.AcceptProxyProtocol && len(o.ProxyIPs) == 0 {
		return nil
	}
	l, _ := iplist.Parse(o.ProxyIPs) // validated by Options.validate
	return &proxyReceiver{
		trusted:  l,
		optional: o.ProxyProtocol == ProxyProtocolOptional,
		timeout:  cmp.Or(o.ProxyHeaderTimeout, DefaultProxyHeaderTimeout),
	}
}

// validateProxyProtocol checks the receiving options (Options.validate).
func (o *Options) validateProxyProtocol() []error {
	var errs []error
	if _, err := iplist.Parse(o.ProxyIPs); err != nil {
		errs = append(errs, fmt.Errorf("ProxyIPs: %w", err))
	}
	if o.AcceptProxyProtocol && len(o.ProxyIPs) == 0 {
		errs = append(errs, errors.New("AcceptProxyProtocol needs ProxyIPs, the trusted senders: an untrusted client must never choose its own address"))
	}
	switch o.ProxyProtocol {
	case "", ProxyProtocolRequired:
	case ProxyProtocolOptional:
		if !o.AcceptProxyProtocol && len(o.ProxyIPs) == 0 {
			errs = append(errs, errors.New("ProxyProtocol \"optional\" needs AcceptProxyProtocol and ProxyIPs"))
		}
	default:
		errs = append(errs, fmt.Errorf("ProxyProtocol must be %q or %q, got %q", ProxyProtocolRequired, ProxyProtocolOptional, o.ProxyProtocol))
	}
	if o.ProxyHeaderTimeout < 0 {
		errs = append(errs, fmt.Errorf("ProxyHeaderTimeout must not be negative, got %v", o.ProxyHeaderTimeout))
	}
	return errs
}

// proxyClientConn is an accepted conn whose client address came from a
// PROXY header: RemoteAddr reports it, so net/http (Request.RemoteAddr)
// and every log see the real client. Unwrap hands the copier the bare
// socket, so forwarding still splices and parks.
type proxyClientConn struct {
	net.Conn
	remote *net.TCPAddr
}

// RemoteAddr is the client address the header named.
func (c *proxyClientConn) RemoteAddr() net.Addr { return c.remote }

// Unwrap returns the socket.
func (c *proxyClientConn) Unwrap() net.Conn { return c.Conn }

// CloseWrite half-closes the socket.
func (c *proxyClientConn) CloseWrite() error { return forwarding.CloseWrite(c.Conn) }

// receiveProxyHeader runs before anything else reads the connection.
// From a trusted sender it reads the header under the header timeout
// (cut short when the proxy stops) and, when it names a TCP source,
// puts a proxyClientConn beneath peek so that the real address is the
// client address from here on. It returns the header (nil when none was
// read) and an error when the connection must be closed.
func (p *Proxy) receiveProxyHeader(peek *forwarding.PeekConn) (*ProxyHeader, error) {
	in := p.proxyIn
	if in == nil || !in.trusted.Contains(clientAddrOf(peek).Addr()) {
		return nil, nil
	}
	_ = peek.SetReadDeadline(time.Now().Add(in.timeout))
	stop := context.AfterFunc(in.stopCtx(p), func() { _ = peek.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		_ = peek.SetReadDeadline(time.Time{})
	}()
	h, err := readProxyHeader(peek)
	switch {
	case errors.Is(err, errNoProxyHeader) && in.optional:
		return nil, nil
	case err != nil:
		return nil, err
	}
	if !h.Local {
		peek.Conn = &proxyClientConn{Conn: peek.Conn, remote: net.TCPAddrFromAddrPort(h.Source)}
	}
	return h, nil
}

// readProxyHeader reads one header from peek, leaving what follows it
// buffered. errNoProxyHeader: the stream does not start with one.
func readProxyHeader(peek *forwarding.PeekConn) (*ProxyHeader, error) {
	for {
		b := peek.Buffered()
		n, err := frameProxyHeader(b)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			h, err := parseProxyHeader(b[:n])
			peek.Discard(n)
			return h, err
		}
		if err := peek.Fill(len(b) + 1); err != nil {
			if len(peek.Buffered()) == 0 {
				if errors.Is(err, io.EOF) {
					return nil, errLeftBeforeHeader
				}
				return nil, fmt.Errorf("waiting for the PROXY header: %w", err)
			}
			return nil, fmt.Errorf("PROXY header incomplete after %d bytes: %w", len(peek.Buffered()), err)
		}
	}
}

// refuseUntrustedHeader is the other half of the trust rule, for ports
// that read the client's first bytes before routing: a connection from a
// sender that is not trusted, on a proxy that receives headers, that
// starts with a PROXY signature is a protocol error. It reads no more
// than a signature's length, under the initial-data deadline.
func refuseUntrustedHeader(peek *forwarding.PeekConn, deadline time.Time) error {
	_ = peek.SetReadDeadline(deadline)
	defer func() { _ = peek.SetReadDeadline(time.Time{}) }()
	for {
		b := peek.Buffered()
		switch proxySignature(b) {
		case 0:
			return nil
		case 1, 2:
			return errors.New("a PROXY header where none may be: from a sender not in proxyIPs, or a second one")
		}
		if peek.Fill(len(b)+1) != nil {
			return nil // the sniffing that follows meets the same end
		}
	}
}

// refuseProxyHeader closes a connection whose header was refused. It has
// no record yet (the header comes before admission), so it is counted
// and logged as a refusal under the socket address.
func (p *Proxy) refuseProxyHeader(peek *forwarding.PeekConn, port int, err error) {
	client := clientAddrOf(peek)
	if errors.Is(err, errLeftBeforeHeader) {
		p.logConn("connection closed before its PROXY header", "client", client, "port", port)
		_ = peek.Close()
		return
	}
	p.reject(refusal{client: client, port: port}, &RejectError{Reason: RejectProxyProtocol, IP: client.Addr(), Err: err})
	_ = peek.Close()
}
