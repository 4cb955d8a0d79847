package smartproxy

import (
	"hash/maphash"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// RateLimit caps HTTP requests on a route per key (client IP, path or a
// header value) in a sliding window. Over the limit a request gets 429 with
// Retry-After.
type RateLimit struct {
	// Enabled switches the limit; nil means true (see BasicAuth.Enabled).
	Enabled *bool `json:"enabled,omitempty"`
	// MaxRequests per Window per key. Required, > 0.
	MaxRequests int `json:"maxRequests"`
	// Window is the window length in seconds. Required, > 0.
	Window int `json:"window"`
	// KeyBy is "ip" (default), "path" or "header".
	KeyBy string `json:"keyBy,omitempty"`
	// HeaderName names the header keyed on with keyBy "header"; requests
	// without it are keyed by client IP instead (so omitting the header
	// does not escape the limit).
	HeaderName string `json:"headerName,omitempty"`
	// ErrorMessage is the body of the 429; default "Too Many Requests".
	ErrorMessage string `json:"errorMessage,omitempty"`
}

// Rate limiter memory bounds: keys are stored as 64-bit seeded hashes (a
// long path or header value costs nothing), and each shard holds at most
// its share of defaultRateLimitKeys entries, evicting the least recently
// used. An evicted key loses its history, which at worst lets it through
// early; it never blocks anybody wrongly.
const (
	rateLimitShards      = 32
	defaultRateLimitKeys = 100000
)

// httpRateLimiter is a compiled RateLimit.
type httpRateLimiter struct {
	cfg    RateLimit
	max    uint32
	window int64 // ns
	keyBy  string
	header string
	msg    string
	// maxKeys is the bound on keys held across shards.
	maxKeys int
	seed    maphash.Seed
	shards  [rateLimitShards]rlShard
}

type rlShard struct {
	mu  sync.Mutex
	m   map[uint64]*rlEntry
	lru rlList // front = least recently used
	_   [64]byte
}

// rlEntry is a sliding-window counter like connection's: the previous and
// the current fixed window, the previous weighted by its overlap.
type rlEntry struct {
	key        uint64
	start      int64 // current fixed window start, unix ns
	prev, cur  uint32
	last       int64 // last request, unix ns
	prevE, nxt *rlEntry
}

func compileRateLimit(fe *fieldErrs, r *RateLimit) *httpRateLimiter {
	if r.Enabled != nil && !*r.Enabled {
		return nil
	}
	const field = "rateLimit"
	if r.MaxRequests <= 0 {
		fe.failf(field+".maxRequests", "must be > 0, got %d", r.MaxRequests)
	}
	if r.Window <= 0 {
		fe.failf(field+".window", "must be > 0 seconds, got %d", r.Window)
	}
	switch r.KeyBy {
	case "", "ip", "path":
	case "header":
		if http.CanonicalHeaderKey(r.HeaderName) == "" {
			fe.failf(field+".headerName", `is required with keyBy "header"`)
		}
	default:
		fe.failf(field+".keyBy", `unknown %q (want "ip", "path" or "header")`, r.KeyBy)
	}
	return newHTTPRateLimiter(*r, defaultRateLimitKeys)
}

func newHTTPRateLimiter(cfg RateLimit, maxKeys int) *httpRateLimiter {
	l := &httpRateLimiter{
		cfg:     cfg,
		max:     uint32(max(cfg.MaxRequests, 0)),
		window:  int64(max(cfg.Window, 0)) * int64(time.Second),
		keyBy:   cfg.KeyBy,
		header:  http.CanonicalHeaderKey(cfg.HeaderName),
		msg:     cfg.ErrorMessage,
		maxKeys: maxKeys,
		seed:    maphash.MakeSeed(),
	}
	if l.keyBy == "" {
		l.keyBy = "ip"
	}
	for i := range l.shards {
		l.shards[i].m = make(map[uint64]*rlEntry)
	}
	return l
}

// clone returns a limiter with the same settings and no history.
func (l *httpRateLimiter) clone() *httpRateLimiter { return newHTTPRateLimiter(l.cfg, l.maxKeys) }

// key hashes the request's key. The kind byte keeps an IP fallback from
// colliding with a header value that happens to spell the same bytes.
func (l *httpRateLimiter) key(r *http.Request, clientIP netip.Addr) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	switch {
	case l.keyBy == "path":
		_ = h.WriteByte('p')
		_, _ = h.WriteString(r.URL.Path)
	case l.keyBy == "header" && r.Header.Get(l.header) != "":
		_ = h.WriteByte('h')
		_, _ = h.WriteString(r.Header.Get(l.header))
	default:
		_ = h.WriteByte('i')
		b := clientIP.Unmap().As16()
		_, _ = h.Write(b[:])
	}
	return h.Sum64()
}

// allow counts a request and reports whether it is within the limit; if
// not, it returns how long until a request would be. Refused requests are
// not counted, so a client that waits Retry-After gets through.
func (l *httpRateLimiter) allow(r *http.Request, clientIP netip.Addr, now time.Time) (bool, time.Duration) {
	return l.allowKey(l.key(r, clientIP), now.UnixNano())
}

func (l *httpRateLimiter) allowKey(k uint64, now int64) (bool, time.Duration) {
	s := &l.shards[k%rateLimitShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		e = l.insert(s, k, now)
	} else {
		s.lru.remove(e)
		s.lru.pushBack(e)
	}
	e.last = now
	// Advance the fixed windows so that now falls in the current one.
	if d := now - e.start; d >= l.window {
		if d/l.window == 1 {
			e.prev = e.cur
		} else {
			e.prev = 0
		}
		e.cur = 0
		e.start += d / l.window * l.window
	}
	elapsed := max(now-e.start, 0)
	est := float64(e.prev)*(1-float64(elapsed)/float64(l.window)) + float64(e.cur)
	if est+1 <= float64(l.max) {
		e.cur++
		return true, 0
	}
	return false, l.retryAfter(e, elapsed)
}

// retryAfter is the time until est <= max-1, i.e. until one more request
// fits: either the previous window's weight decays enough, or (if the
// current window alone is full) the current window ends and then decays.
func (l *httpRateLimiter) retryAfter(e *rlEntry, elapsed int64) time.Duration {
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
// LRU front and, if the shard is full, its least recently used entry.
func (l *httpRateLimiter) insert(s *rlShard, k uint64, now int64) *rlEntry {
	for e := s.lru.head; e != nil && now-e.last >= 2*l.window; e = s.lru.head {
		s.lru.remove(e)
		delete(s.m, e.key)
	}
	if perShard := max(l.maxKeys/rateLimitShards, 1); len(s.m) >= perShard {
		e := s.lru.head
		s.lru.remove(e)
		delete(s.m, e.key)
	}
	e := &rlEntry{key: k, start: now}
	s.m[k] = e
	s.lru.pushBack(e)
	return e
}

// size returns the number of keys held, for tests and metrics.
func (l *httpRateLimiter) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

type rlList struct{ head, tail *rlEntry }

func (l *rlList) pushBack(e *rlEntry) {
	e.prevE, e.nxt = l.tail, nil
	if l.tail != nil {
		l.tail.nxt = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *rlList) remove(e *rlEntry) {
	if e.prevE != nil {
		e.prevE.nxt = e.nxt
	} else {
		l.head = e.nxt
	}
	if e.nxt != nil {
		e.nxt.prevE = e.prevE
	} else {
		l.tail = e.prevE
	}
	e.prevE, e.nxt = nil, nil
}
