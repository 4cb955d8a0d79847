package h1client

import (
	"bufio"
	"errors"
	"net"
	"os"
	"time"
)

// aLongTimeAgo is a deadline in the past: blocked and later I/O on a
// conn with it fails at once.
var aLongTimeAgo = time.Unix(1, 0)

// conn is a backend connection and its buffers, owned by one exchange
// at a time or by the pool. Its Read and Write are the buffers' I/O:
// they count what the exchange moved and bound the response head.
type conn struct {
	c         net.Conn
	raw       net.Conn // the socket under c (c itself unless TLS): what the prober watches
	addr      string
	key       poolKey // the pool it belongs to
	br        *bufio.Reader
	idleSince time.Time
	reused    bool     // taken from the pool: the backend may have closed it since
	nread     int64    // bytes read in this exchange
	nwritten  int64    // bytes written in this exchange
	limit     int64    // bytes the response head may still take
	intr      func()   // interrupt, made once rather than per exchange
	ex        Exchange // reused by every exchange on the connection
	probe     prober   // peeks before reuse (peek_unix.go)
}

func (pc *conn) Read(p []byte) (int, error) {
	if pc.limit <= 0 {
		return 0, errors.New("response head too large")
	}
	if int64(len(p)) > pc.limit {
		p = p[:pc.limit]
	}
	n, err := pc.c.Read(p)
	pc.nread += int64(n)
	pc.limit -= int64(n)
	return n, err
}

func (pc *conn) Write(p []byte) (int, error) {
	n, err := pc.c.Write(p)
	pc.nwritten += int64(n)
	return n, err
}

// interrupt makes pc's blocked and later I/O fail: the request ended.
// A conn without deadlines (from a custom dialer) is closed instead.
func (pc *conn) interrupt() {
	if pc.c.SetDeadline(aLongTimeAgo) != nil {
		_ = pc.c.Close()
	}
}

// release ends pc's exchange: pc goes back to the pool if keep, the
// interrupt never ran and no byte beyond the response arrived (a broken
// backend's); otherwise it is closed.
func (c *Client) release(pc *conn, stop func() bool, keep bool) {
	if stop() && keep && pc.br.Buffered() == 0 && pc.tlsDrained() {
		c.put(pc)
		return
	}
	_ = pc.c.Close()
}

// tlsDrained reports that a TLS connection's tls.Conn holds no record
// beyond the response: one that came in the same read as the response's
// last record sits in the tls.Conn's input buffer, where neither br nor
// the prober (it peeks at the socket under it) sees it, and would be
// read as the next request's response. A read with a deadline in the
// past decrypts such a record (no system call) or fails at once; a
// post-handshake message (a session ticket) is taken in passing.
// Cleartext connections: true.
func (pc *conn) tlsDrained() bool {
	if pc.raw == pc.c {
		return true
	}
	_ = pc.c.SetReadDeadline(aLongTimeAgo)
	_, err := pc.br.Peek(1)
	_ = pc.c.SetReadDeadline(time.Time{})
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// probeAfter is how long a pooled connection may have been idle and be
// reused unprobed by a request that can be repeated.
var probeAfter = time.Millisecond // a variable for the tests

// get takes the most recently used idle connection of key k that is
// still usable: not expired and not closed by the backend (prober).
// nil when there is none.
//
// The probe is a system call per exchange, an eighth of a keep-alive
// request's. A request that can be repeated (repeatable: Replayable, and
// nothing of it taken from a client yet) skips it on a connection idle
// less than probeAfter: a connection the backend closed in that moment
// fails before any response byte and the stale-connection rule sends
// the request again on a new one. Unsolicited bytes arriving in that
// moment are misread as the response, as they are today when they
// arrive a moment after the probe, while the backend works on the
// request: the probe narrows that window, it cannot close it (HAProxy's
// is one poll of its event loop). A request that cannot be repeated is
// always probed, so that a closed connection costs it nothing.
func (c *Client) get(k poolKey, repeatable bool) *conn {
	for {
		c.mu.Lock()
		list := c.idle[k]
		if len(list) == 0 {
			c.mu.Unlock()
			return nil
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		c.idle[k] = list[:len(list)-1]
		c.n--
		maxIdle := c.idleTimeout
		c.mu.Unlock()
		idle := time.Since(pc.idleSince)
		if idle < maxIdle && (repeatable && idle < probeAfter || pc.probe.aliveNow()) {
			pc.reused = true
			return pc
		}
		_ = pc.c.Close()
	}
}

// put pools pc, idle from now. Past the bounds the longest idle
// connection goes: of pc's pool key if that one is full, else of all.
func (c *Client) put(pc *conn) {
	pc.idleSince = time.Now()
	var evicted *conn
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = pc.c.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[poolKey][]*conn)
	}
	if len(c.idle[pc.key]) >= MaxIdlePerAddr {
		evicted = c.evictLocked(pc.key, false)
	} else if c.n >= MaxIdle {
		evicted = c.evictLocked(poolKey{}, true)
	}
	c.idle[pc.key] = append(c.idle[pc.key], pc)
	c.n++
	if len(c.idle) > 2*MaxIdle {
		// Keys whose connections all went keep their (empty) lists, so
		// that a busy key does not allocate one per request; a client
		// choosing server names (an "original" route's SNI) must not grow
		// the map without bound, though: the empty ones go once they are
		// many, which is at most once per MaxIdle new keys.
		for k, list := range c.idle {
			if len(list) == 0 {
				delete(c.idle, k)
			}
		}
	}
	if !c.armed {
		c.armed = true
		if c.reaper == nil {
			c.reaper = time.AfterFunc(c.idleTimeout, c.reap)
		} else {
			c.reaper.Reset(c.idleTimeout)
		}
	}
	c.mu.Unlock()
	if evicted != nil {
		_ = evicted.c.Close()
	}
}

// evictLocked takes out the longest idle connection of key k, or of all
// keys when all.
func (c *Client) evictLocked(k poolKey, all bool) *conn {
	if all {
		var since time.Time
		found := false
		for a, list := range c.idle {
			if len(list) > 0 && (!found || list[0].idleSince.Before(since)) {
				k, since, found = a, list[0].idleSince, true
			}
		}
	}
	list := c.idle[k]
	pc := list[0]
	n := copy(list, list[1:])
	list[n] = nil
	c.idle[k] = list[:n]
	c.n--
	return pc
}

// reap closes the connections idle for the idle timeout and re-arms for
// the next to expire, if any is left. It runs on the reaper's timer, so
// an empty pool costs no goroutine and no wake-up.
func (c *Client) reap() {
	now := time.Now()
	var dead []*conn
	var next time.Time
	c.mu.Lock()
	timeout := c.idleTimeout
	for key, list := range c.idle {
		i := 0
		for i < len(list) && now.Sub(list[i].idleSince) >= timeout {
			i++
		}
		dead = append(dead, list[:i]...)
		k := copy(list, list[i:])
		clear(list[k:])
		if k == 0 {
			delete(c.idle, key) // also forgets addresses no longer used
			continue
		}
		c.idle[key] = list[:k]
		if next.IsZero() || list[0].idleSince.Before(next) {
			next = list[0].idleSince
		}
	}
	c.n -= len(dead)
	c.armed = c.n > 0
	if c.armed {
		c.reaper.Reset(next.Add(timeout).Sub(now))
	}
	c.mu.Unlock()
	for _, pc := range dead {
		_ = pc.c.Close()
	}
}

// IdleConns is how many connections the pool holds idle now.
func (c *Client) IdleConns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// CloseIdleConnections closes the pooled connections and stops pooling:
// call it once no request is expected any more. An exchange that still
// ends closes its connection.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.n, c.closed, c.armed = nil, 0, true, false
	if c.reaper != nil {
		c.reaper.Stop()
	}
	c.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			_ = pc.c.Close()
		}
	}
}
