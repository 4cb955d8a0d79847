package auth

import (
	"cmp"
	"hash/maphash"
	"net/http"
	"net/netip"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/internal/keytable"
	"github.com/gosmartproxy/smartproxy/schema"
)

// RateLimit caps HTTP requests on a route per key (client IP, path or a
// header value) in a sliding window. Over the limit a request gets 429 with
// Retry-After.
type RateLimit struct {
	// Enabled switches the limit; nil means true (see BasicAuth.Enabled).
	Enabled *bool `json:"enabled,omitempty"`
	// MaxRequests per Window per key. Required, > 0.
	MaxRequests int `json:"maxRequests"`
	// Window is the window length. Required, > 0.
	Window schema.Seconds `json:"window"`
	// KeyBy says what a request is counted under; "" means KeyByIP.
	KeyBy KeyBy `json:"keyBy,omitempty"`
	// HeaderName names the header keyed on with keyBy "header"; requests
	// without it are keyed by client IP instead (so omitting the header
	// does not escape the limit).
	HeaderName string `json:"headerName,omitempty"`
	// ErrorMessage is the body of the 429; default "Too Many Requests".
	ErrorMessage string `json:"errorMessage,omitempty"`
}

// KeyBy says what a RateLimit counts requests under.
type KeyBy string

// The values of RateLimit.KeyBy.
const (
	// KeyByIP counts per client IP (IPv6 clients per prefix, see
	// Checker.SetIPv6PrefixLen). It is the default.
	KeyByIP KeyBy = "ip"
	// KeyByPath counts per request path, whoever sends it.
	KeyByPath KeyBy = "path"
	// KeyByHeader counts per value of RateLimit.HeaderName; requests
	// without that header are counted per client IP.
	KeyByHeader KeyBy = "header"
)

// Rate limiter memory bounds: keys are stored as 64-bit seeded hashes (a
// long path or header value costs nothing), and each shard holds at most
// its share of defaultRateLimitKeys entries, evicting the least recently
// used. An evicted key loses its history, which at worst lets it through
// early; it never blocks anybody wrongly.
const (
	rateLimitShards      = 32
	defaultRateLimitKeys = 100000
)

// rateLimiter is a compiled RateLimit.
type rateLimiter struct {
	cfg    RateLimit
	max    uint32
	window int64 // ns
	keyBy  KeyBy
	header string
	msg    string
	// maxKeys is the bound on keys held across shards.
	maxKeys int
	seed    maphash.Seed // seeds the key hash
	// keys holds the counters. Every entry is idle in KeyTable's terms
	// (nothing holds it), so its idle list is the LRU order of requests.
	keys *keytable.Table[uint64, rlWindow]
	// v6Bits groups IPv6 clients per /v6Bits when keyed by IP, like the
	// connection limits (Checker.SetIPv6PrefixLen); 0 means the default /64.
	v6Bits int
}

type rlEntry = keytable.Entry[uint64, rlWindow]

// rlWindow is a sliding-window counter like connection's: the previous and
// the current fixed window, the previous weighted by its overlap.
type rlWindow struct {
	start     int64 // current fixed window start, unix ns
	prev, cur uint32
}

// shardOfKey picks the shard of a key, which is already a seeded hash.
func shardOfKey(_ maphash.Seed, k uint64) uint64 { return k }

func compileRateLimit(fe *schema.Collector, r *RateLimit) *rateLimiter {
	if r.Enabled != nil && !*r.Enabled {
		return nil
	}
	const field = "rateLimit"
	if r.MaxRequests <= 0 {
		fe.Failf(field+".maxRequests", "must be > 0, got %d", r.MaxRequests)
	}
	if r.Window <= 0 {
		fe.Failf(field+".window", "must be > 0 seconds, got %d", r.Window)
	}
	switch r.KeyBy {
	case "", KeyByIP, KeyByPath:
	case KeyByHeader:
		if http.CanonicalHeaderKey(r.HeaderName) == "" {
			fe.Failf(field+".headerName", `is required with keyBy %q`, KeyByHeader)
		}
	default:
		fe.Failf(field+".keyBy", `unknown %q (want %q, %q or %q)`, r.KeyBy, KeyByIP, KeyByPath, KeyByHeader)
	}
	return newRateLimiter(*r, defaultRateLimitKeys)
}

func newRateLimiter(cfg RateLimit, maxKeys int) *rateLimiter {
	l := &rateLimiter{
		cfg:     cfg,
		max:     uint32(max(cfg.MaxRequests, 0)),
		window:  int64(max(cfg.Window, 0).Duration()),
		keyBy:   cfg.KeyBy,
		header:  http.CanonicalHeaderKey(cfg.HeaderName),
		msg:     cfg.ErrorMessage,
		maxKeys: maxKeys,
		seed:    maphash.MakeSeed(),
		keys:    keytable.New[uint64, rlWindow](rateLimitShards, 0, shardOfKey),
	}
	l.keyBy = cmp.Or(l.keyBy, KeyByIP)
	return l
}

// clone returns a limiter with the same settings and no history.
func (l *rateLimiter) clone() *rateLimiter { return newRateLimiter(l.cfg, l.maxKeys) }

// key hashes the request's key. The kind byte keeps an IP fallback from
// colliding with a header value that happens to spell the same bytes.
func (l *rateLimiter) key(r *http.Request, clientIP netip.Addr) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	switch {
	case l.keyBy == KeyByPath:
		_ = h.WriteByte('p')
		_, _ = h.WriteString(r.URL.Path)
	case l.keyBy == KeyByHeader && r.Header.Get(l.header) != "":
		_ = h.WriteByte('h')
		_, _ = h.WriteString(r.Header.Get(l.header))
	default:
		_ = h.WriteByte('i')
		b := connection.LimitKey(clientIP.Unmap(), l.v6Bits).As16()
		_, _ = h.Write(b[:])
	}
	return h.Sum64()
}

// allow counts a request and reports whether it is within the limit; if
// not, it returns how long until a request would be. Refused requests are
// not counted, so a client that waits Retry-After gets through.
func (l *rateLimiter) allow(r *http.Request, clientIP netip.Addr, now time.Time) (bool, time.Duration) {
	return l.allowKey(l.key(r, clientIP), now.UnixNano())
}

func (l *rateLimiter) allowKey(k uint64, now int64) (bool, time.Duration) {
	s := l.keys.Shard(k)
	s.Lock()
	defer s.Unlock()
	e := s.Get(k)
	if e == nil {
		e = l.insert(s, k, now)
	}
	s.SetIdle(e, now) // to the back of the LRU order
	w := &e.Value
	// Advance the fixed windows so that now falls in the current one.
	if d := now - w.start; d >= l.window {
		if d/l.window == 1 {
			w.prev = w.cur
		} else {
			w.prev = 0
		}
		w.cur = 0
		w.start += d / l.window * l.window
	}
	elapsed := max(now-w.start, 0)
	est := float64(w.prev)*(1-float64(elapsed)/float64(l.window)) + float64(w.cur)
	if est+1 <= float64(l.max) {
		w.cur++
		return true, 0
	}
	return false, l.retryAfter(w, elapsed)
}

// retryAfter is the time until est <= max-1, i.e. until one more request
// fits: either the previous window's weight decays enough, or (if the
// current window alone is full) the current window ends and then decays.
func (l *rateLimiter) retryAfter(e *rlWindow, elapsed int64) time.Duration {
	w, budget := float64(l.window), float64(l.max)-1
	toEnd := l.window - elapsed
	if float64(e.cur) > budget {
		// After the window ends, cur becomes prev: need cur*(1-t/w) <= budget.
		return time.Duration(toEnd + int64(w*(1-budget/float64(e.cur))))
	}
	// Need prev*(1-(elapsed+t)/w) + cur <= budget within this window; at
	// its end prev'=cur <= budget always fits.
	t := int64(w*(1-(budget-float64(e.cur))/float64(e.prev))) - elapsed
	return time.Duration(min(max(t, 1), toEnd))
}

// insert adds an entry for k, first dropping expired entries from the
// LRU front and, if the shard is full, its least recently used entry. The
// caller files the entry.
func (l *rateLimiter) insert(s *keytable.Shard[uint64, rlWindow], k uint64, now int64) *rlEntry {
	s.Prune(now, 2*l.window)
	if perShard := max(l.maxKeys/rateLimitShards, 1); s.Len() >= perShard {
		s.EvictOldest()
	}
	e := s.Create(k)
	e.Value.start = now
	return e
}

// size returns the number of keys held, for tests and metrics.
func (l *rateLimiter) size() int { return l.keys.Len() }
