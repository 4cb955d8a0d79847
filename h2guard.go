package smartproxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP/2 guard: a frame inspector between each HTTP/2 client
// connection and the standard library's HTTP/2 server, which answers every
// PING and SETTINGS, runs a handler (and so a backend request) for every
// stream a client opens and resets at once (CVE-2023-44487, "rapid
// reset"), and processes any number of frames that do no work (empty DATA,
// PRIORITY, WINDOW_UPDATE, CONTINUATION). The guard reads the frame
// headers on the decrypted stream as they pass, charges the frames that
// cost the server work without being requests to per-connection budgets,
// and ends a connection that exhausts one: it sends GOAWAY
// ENHANCE_YOUR_CALM when the server's output stands between two frames
// (it tracks the frame boundaries of what the server writes, and waits up
// to h2StopWait for a write in flight), then closes the connection. Normal
// traffic only pays for walking the 9-byte frame headers of what it reads
// and writes.
//
// The guard is inserted through the server's TLSNextProto hooks, which are
// the only place where the standard library hands over an HTTP/2
// connection: both h2 over TLS and h2c are served through the
// "unencrypted_http2" entry, given the guarded conn (the guard reports the
// TLS state, so requests still see r.TLS and the https scheme).

// HTTP/2 frame types and flags the guard looks at (RFC 9113 §6).
const (
	h2FrameData         = 0x0
	h2FrameHeaders      = 0x1
	h2FramePriority     = 0x2
	h2FrameRSTStream    = 0x3
	h2FrameSettings     = 0x4
	h2FramePushPromise  = 0x5
	h2FramePing         = 0x6
	h2FrameGoAway       = 0x7
	h2FrameWindowUpdate = 0x8
	h2FrameContinuation = 0x9

	h2FlagEndStream = 0x1
	h2FlagAck       = 0x1 // SETTINGS and PING

	h2FrameHeaderLen = 9
	h2ErrCalm        = 0xb // ENHANCE_YOUR_CALM
)

// h2ClientPreface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2MaxStreams is the concurrent-stream limit the server advertises (the
// standard library's default, made explicit because the reset budget
// follows it).
const h2MaxStreams = 250

// Per-connection budgets: burst is what a connection may spend at once,
// rate what comes back per second, and some budgets are also refilled by
// useful work (see h2Guard.refill). They are far above what browsers, gRPC
// and HTTP client libraries send, and far below a flood: the attacks this
// answers send hundreds of thousands of frames per second.
var (
	// Resets of client streams: a client may cancel every stream it can
	// have open at once (a page navigated away); each response the server
	// completes gives one back.
	h2ResetBudget = h2BudgetSpec{burst: h2MaxStreams, rate: 64}
	// PINGs: keep-alive and gRPC's bandwidth probes, which follow the data
	// the server sends (each DATA frame written gives one back).
	h2PingBudget = h2BudgetSpec{burst: 64, rate: 8}
	// SETTINGS: one at the start, rarely more.
	h2SettingsBudget = h2BudgetSpec{burst: 32, rate: 4}
	// Frames that carry no request and no data: PRIORITY, WINDOW_UPDATE,
	// empty DATA without END_STREAM, CONTINUATION, unknown types. Window
	// updates follow the data the server sends (two per DATA frame written
	// come back) and priorities and continuations follow streams (two per
	// stream opened).
	h2ControlBudget = h2BudgetSpec{burst: 1024, rate: 128}
)

// h2BudgetSpec is the size of one budget.
type h2BudgetSpec struct{ burst, rate int64 }

// h2Budget is a token bucket refilled lazily: while it has tokens, taking
// one is a decrement, and the clock is read only when it runs dry.
type h2Budget struct {
	left, burst, rate int64
	last              time.Time // when it was last refilled by time
}

func (b *h2Budget) init(s h2BudgetSpec, now time.Time) {
	*b = h2Budget{left: s.burst, burst: s.burst, rate: s.rate, last: now}
}

// credit gives n tokens back, up to the burst.
func (b *h2Budget) credit(n int64) { b.left = min(b.burst, b.left+n) }

// take spends one token; false when none is left even after the refill.
func (b *h2Budget) take() bool {
	if b.left > 0 {
		b.left--
		return true
	}
	now := time.Now()
	if add := int64(now.Sub(b.last)) * b.rate / int64(time.Second); add > 0 {
		b.left = min(b.burst, add)
		b.last = now
	}
	if b.left > 0 {
		b.left--
		return true
	}
	return false
}

// errH2Flood ends the read side of a connection the guard closed.
var errH2Flood = errors.New("http2: connection closed for flooding")

// h2Guard is a guarded HTTP/2 server connection.
type h2Guard struct {
	net.Conn
	log   func(msg string, args ...any)
	abuse atomic.Bool // set once the connection was found abusive

	// Read side: only the server's frame-reading goroutine reads.
	preface    int  // preface bytes still to be checked
	eatPreface bool // remove the preface from the stream (the server was told it saw it)
	hdr        [h2FrameHeaderLen]byte
	hdrN       int    // bytes of hdr filled
	skip       uint32 // payload bytes of the current frame still to pass
	maxStream  uint32 // highest client stream opened
	// settingsPayload: the payload of a SETTINGS frame comes next.
	settingsPayload bool
	resets          h2Budget
	pings           h2Budget
	settings        h2Budget
	control         h2Budget
	seenData        int64 // outData and outEnded folded into the budgets so far
	seenEnded       int64

	// Write side: the server writes from one goroutine at a time, but the
	// read side may inject GOAWAY, so writes are serialised by wmu.
	wmu      sync.Mutex
	whdr     [h2FrameHeaderLen]byte
	whdrN    int
	wskip    uint32
	boundary chan struct{} // closed when the output reaches a frame boundary while stop waits
	outData  atomic.Int64  // DATA frames the server wrote
	outEnded atomic.Int64  // streams the server ended (END_STREAM written)
}

// newH2Guard guards c. prefaceRead says the server already consumed the
// client preface (h2c); otherwise the guard checks and removes it.
func newH2Guard(c net.Conn, prefaceRead bool, log func(msg string, args ...any)) *h2Guard {
	g := &h2Guard{Conn: c, log: log}
	if !prefaceRead {
		g.preface, g.eatPreface = len(h2ClientPreface), true
	}
	now := time.Now()
	g.resets.init(h2ResetBudget, now)
	g.pings.init(h2PingBudget, now)
	g.settings.init(h2SettingsBudget, now)
	g.control.init(h2ControlBudget, now)
	return g
}

// h2GuardTLS is a guard over a terminated TLS connection: it reports the
// TLS state, from which the HTTP/2 server sets r.TLS and the scheme.
type h2GuardTLS struct {
	*h2Guard
	state tls.ConnectionState
}

// ConnectionState returns the TLS state of the connection beneath.
func (g *h2GuardTLS) ConnectionState() tls.ConnectionState { return g.state }

func (g *h2Guard) Read(b []byte) (int, error) {
	for {
		if g.abuse.Load() {
			return 0, errH2Flood
		}
		n, err := g.Conn.Read(b)
		if g.preface > 0 && n > 0 {
			var perr error
			n, perr = g.checkPreface(b, n)
			if perr != nil {
				_ = g.Conn.Close()
				return 0, perr
			}
			if n == 0 && err == nil {
				continue // the read held only preface bytes
			}
		}
		if n > 0 {
			if reason := g.inspect(b[:n]); reason != "" {
				g.stop(reason)
				return 0, errH2Flood
			}
		}
		return n, err
	}
}

// checkPreface compares the first bytes read with the client preface and,
// when the guard is to remove it, drops them from b[:n].
func (g *h2Guard) checkPreface(b []byte, n int) (int, error) {
	off := len(h2ClientPreface) - g.preface
	k := min(n, g.preface)
	if string(b[:k]) != h2ClientPreface[off:off+k] {
		return 0, errors.New("http2: bad client preface")
	}
	g.preface -= k
	if !g.eatPreface {
		return n, nil
	}
	copy(b, b[k:n])
	return n - k, nil
}

// inspect walks the frame headers in b (the bytes just read) and charges
// them; it returns why the connection must end, or "".
func (g *h2Guard) inspect(b []byte) string {
	for len(b) > 0 {
		if g.skip > 0 {
			k := uint32(min(uint64(len(b)), uint64(g.skip)))
			if g.settingsPayload && k == g.skip {
				// The server reads a frame's header and payload
				// separately, so a payload usually starts a read.
				dedupeSettings(b[:k])
			}
			g.settingsPayload = false
			g.skip -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.hdrN:], b)
		g.hdrN += k
		b = b[k:]
		if g.hdrN < h2FrameHeaderLen {
			return ""
		}
		g.hdrN = 0
		length := uint32(g.hdr[0])<<16 | uint32(g.hdr[1])<<8 | uint32(g.hdr[2])
		g.skip = length
		g.settingsPayload = g.hdr[3] == h2FrameSettings && g.hdr[4]&h2FlagAck == 0 && length > 0
		if reason := g.charge(g.hdr[3], g.hdr[4], binary.BigEndian.Uint32(g.hdr[5:])&(1<<31-1), length); reason != "" {
			return reason
		}
	}
	return ""
}

// dedupeSettings makes a SETTINGS payload that sets one parameter more
// than once acceptable to the HTTP/2 server, which refuses such a frame
// with a connection error although RFC 9113 §6.5.3 says the values are
// processed in order: each value overridden by a later one in the frame
// gets a distinct unknown identifier, which the server ignores (§6.5.2), so
// the last value wins as in-order processing gives. Only a payload that
// arrived whole in one read is rewritten (SETTINGS frames are small and
// come in one piece); others are left to the server as before.
func dedupeSettings(p []byte) {
	const entry = 6
	if len(p)%entry != 0 || len(p) > 64*entry {
		return // malformed (the server reports it) or unreasonably long
	}
	for i := 0; i+entry <= len(p); i += entry {
		id := binary.BigEndian.Uint16(p[i:])
		for j := i + entry; j+entry <= len(p); j += entry {
			if binary.BigEndian.Uint16(p[j:]) == id {
				// 0xf000 and up is unassigned; i/entry keeps them distinct.
				binary.BigEndian.PutUint16(p[i:], 0xf000+uint16(i/entry))
				break
			}
		}
	}
}

// charge accounts for one client frame.
func (g *h2Guard) charge(typ, flags byte, stream, length uint32) string {
	switch typ {
	case h2FrameHeaders:
		if stream > g.maxStream && stream&1 == 1 {
			g.maxStream = stream
			g.control.credit(2)
		}
		return ""
	case h2FrameData:
		if length > 0 || flags&h2FlagEndStream != 0 {
			return ""
		}
		return g.spend(&g.control, "empty DATA")
	case h2FrameRSTStream:
		return g.spend(&g.resets, "stream resets")
	case h2FramePing:
		if flags&h2FlagAck != 0 {
			return g.spend(&g.control, "PING ACK")
		}
		return g.spend(&g.pings, "PING")
	case h2FrameSettings:
		if flags&h2FlagAck != 0 {
			return g.spend(&g.control, "SETTINGS ACK")
		}
		return g.spend(&g.settings, "SETTINGS")
	case h2FramePriority, h2FrameWindowUpdate, h2FrameContinuation, h2FramePushPromise, h2FrameGoAway:
		return g.spend(&g.control, "control frames")
	default:
		return g.spend(&g.control, "unknown frames")
	}
}

// spend takes a token from b, first folding in what the server's output
// gave back; it names the flood when none is left.
func (g *h2Guard) spend(b *h2Budget, what string) string {
	if b.take() {
		return ""
	}
	if d := g.outData.Load(); d != g.seenData {
		g.pings.credit(d - g.seenData)
		g.control.credit(2 * (d - g.seenData))
		g.seenData = d
	}
	if e := g.outEnded.Load(); e != g.seenEnded {
		g.resets.credit(e - g.seenEnded)
		g.seenEnded = e
	}
	if b.take() {
		return ""
	}
	return what
}

// h2StopWait bounds how long ending an abusive connection waits for the
// server's output to reach a frame boundary (and then for the GOAWAY).
const h2StopWait = 500 * time.Millisecond

// stop ends an abusive connection: GOAWAY ENHANCE_YOUR_CALM once the
// server's output stands between two frames, then close. From here on the
// server's writes only finish the frame in progress (see Write) and its
// Close waits for the guard's (see Close): the server closes its
// connection when a write fails, which would cut the GOAWAY off. The write
// deadline bounds the wait: a write to a client that does not read fails
// instead, and then no GOAWAY is sent (a TLS stream is broken after a
// failed write). Closing makes the server's next read fail, which tears
// its side down. Runs in the server's reading goroutine, which is the
// abusive connection's own, so the server reads no frame meanwhile.
func (g *h2Guard) stop(reason string) {
	deadline := time.Now().Add(h2StopWait)
	_ = g.Conn.SetWriteDeadline(deadline)
	g.wmu.Lock()
	g.abuse.Store(true)
	if g.midFrame() {
		done := make(chan struct{})
		g.boundary = done
		g.wmu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
		g.wmu.Lock()
		g.boundary = nil
	}
	sent := false
	if !g.midFrame() {
		debug := "flood: " + reason
		f := make([]byte, h2FrameHeaderLen+8+len(debug))
		f[0], f[1], f[2] = 0, 0, byte(8+len(debug))
		f[3] = h2FrameGoAway
		binary.BigEndian.PutUint32(f[9:], g.maxStream)
		binary.BigEndian.PutUint32(f[13:], h2ErrCalm)
		copy(f[17:], debug)
		_, err := g.Conn.Write(f)
		sent = err == nil
	}
	g.wmu.Unlock()
	if sent {
		g.linger()
	}
	_ = g.Conn.Close()
	g.log("closing HTTP/2 connection: "+reason+" flood", "client", g.RemoteAddr(), "goaway", sent)
}

// Close closes the connection, except while the guard ends it: then the
// guard closes it after its GOAWAY (the server closes a connection whose
// write failed, and the guard fails the server's writes from then on).
func (g *h2Guard) Close() error {
	if g.abuse.Load() {
		return nil
	}
	return g.Conn.Close()
}

// linger gives the GOAWAY a chance to be read: closing a socket with
// unread input (the flood still coming) sends a reset, and a client's
// kernel drops what it had not read yet when the reset arrives. So the
// guard half-closes, then reads and discards until the client closes too
// or h2StopWait passes, as nginx's lingering close does.
func (g *h2Guard) linger() {
	cw, ok := g.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if g.Conn.SetReadDeadline(time.Now().Add(h2StopWait)) != nil {
		return
	}
	buf := make([]byte, 4<<10)
	for {
		if _, err := g.Conn.Read(buf); err != nil {
			return
		}
	}
}

func (g *h2Guard) Write(b []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.abuse.Load() {
		return g.finishFrame(b)
	}
	n, err := g.Conn.Write(b)
	g.track(b[:n])
	return n, err
}

// midFrame says the server's output stops inside a frame. Needs wmu.
func (g *h2Guard) midFrame() bool { return g.whdrN != 0 || g.wskip != 0 }

// finishFrame writes what the server writes while the guard ends the
// connection: only the rest of the frame in progress, so that the GOAWAY
// can follow it, and then nothing. It tells stop when the frame is done.
// Needs wmu.
func (g *h2Guard) finishFrame(b []byte) (int, error) {
	k := 0
	switch {
	case g.wskip > 0:
		k = int(min(uint64(len(b)), uint64(g.wskip)))
	case g.whdrN > 0:
		need := h2FrameHeaderLen - g.whdrN
		if len(b) < need {
			k = len(b)
			break
		}
		var h [h2FrameHeaderLen]byte
		copy(h[:], g.whdr[:g.whdrN])
		copy(h[g.whdrN:], b[:need])
		k = min(len(b), need+(int(h[0])<<16|int(h[1])<<8|int(h[2])))
	}
	if k == 0 {
		return 0, errH2Flood
	}
	n, err := g.Conn.Write(b[:k])
	g.track(b[:n])
	if !g.midFrame() && g.boundary != nil {
		close(g.boundary)
		g.boundary = nil
	}
	if err == nil && n < len(b) {
		err = errH2Flood
	}
	return n, err
}

// track follows the frame boundaries of what the server wrote, counting
// DATA frames and ended streams for the budgets.
func (g *h2Guard) track(b []byte) {
	var data, ended int64
	for len(b) > 0 {
		if g.wskip > 0 {
			k := uint32(min(uint64(len(b)), uint64(g.wskip)))
			g.wskip -= k
			b = b[k:]
			continue
		}
		k := copy(g.whdr[g.whdrN:], b)
		g.whdrN += k
		b = b[k:]
		if g.whdrN < h2FrameHeaderLen {
			break
		}
		g.whdrN = 0
		g.wskip = uint32(g.whdr[0])<<16 | uint32(g.whdr[1])<<8 | uint32(g.whdr[2])
		switch typ := g.whdr[3]; {
		case typ == h2FrameData:
			data++
			fallthrough
		case typ == h2FrameHeaders:
			if g.whdr[4]&h2FlagEndStream != 0 {
				ended++
			}
		}
	}
	if data > 0 {
		g.outData.Add(data)
	}
	if ended > 0 {
		g.outEnded.Add(ended)
	}
}

// unencryptedConn hands a net.Conn to the HTTP/2 server's
// "unencrypted_http2" entry, which takes it out of a *tls.Conn with this
// method (the standard library's own h2c hand-over does the same).
type unencryptedConn struct {
	net.Conn // nil: the *tls.Conn around it is never used as a conn
	conn     net.Conn
}

// UnencryptedNetConn returns the conn to serve.
func (c unencryptedConn) UnencryptedNetConn() net.Conn { return c.conn }

// guardHTTP2 puts the guard in front of srv's HTTP/2 server. It must run
// after srv set up its HTTP/2 support (in Serve, before the first Accept)
// and before the first connection is served.
func (h *httpLayer) guardHTTP2(srv *http.Server) {
	serve := srv.TLSNextProto["unencrypted_http2"]
	if serve == nil || srv.TLSNextProto["h2"] == nil {
		h.px.log.Warn("HTTP/2 server not found; HTTP/2 connections are not guarded against floods")
		return
	}
	logf := func(msg string, args ...any) { h.px.log.Log(h.px.baseCtx, slog.LevelInfo, msg, args...) }
	srv.TLSNextProto["h2"] = func(s *http.Server, c *tls.Conn, hd http.Handler) {
		g := &h2GuardTLS{h2Guard: newH2Guard(c, false, logf), state: c.ConnectionState()}
		serve(s, tls.Client(unencryptedConn{conn: g}, nil), hd)
	}
	srv.TLSNextProto["unencrypted_http2"] = func(s *http.Server, c *tls.Conn, hd http.Handler) {
		u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			serve(s, c, hd) // not the standard hand-over: let the server report it
			return
		}
		serve(s, tls.Client(unencryptedConn{conn: newH2Guard(u.UnencryptedNetConn(), true, logf)}, nil), hd)
	}
}
