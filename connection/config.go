package connection

import (
	"cmp"
	"fmt"
	"math"
	"time"
)

// KeepAliveTreatment selects how the inactivity timeout applies to
// connections (mirrors TS SmartProxy keepAliveTreatment).
type KeepAliveTreatment string

// Keep-alive treatments. The empty string means KeepAliveStandard.
const (
	// KeepAliveStandard applies Config.InactivityTimeout as is.
	KeepAliveStandard KeepAliveTreatment = "standard"
	// KeepAliveExtended multiplies the inactivity timeout by
	// Config.KeepAliveInactivityMultiplier.
	KeepAliveExtended KeepAliveTreatment = "extended"
	// KeepAliveImmortal disables the inactivity timeout; MaxLifetime still applies.
	KeepAliveImmortal KeepAliveTreatment = "immortal"
)

// TS SmartProxy defaults, applied for zero Config fields.
const (
	DefaultMaxConnectionsPerIP           = 100
	DefaultConnectionRateLimitPerMinute  = 300
	DefaultInactivityTimeout             = 4 * time.Hour // 14400000 ms
	DefaultKeepAliveInactivityMultiplier = 6.0
	DefaultMaxLifetime                   = 24 * time.Hour // 86400000 ms
	DefaultMaxTrackedIPs                 = 100000
	// DefaultIPv6PrefixLen groups IPv6 clients per /64 for per-IP limits
	// (not in TS SmartProxy, which counts per address).
	DefaultIPv6PrefixLen = 64
)

// rateWindow is the length of the sliding window used for
// ConnectionRateLimitPerMinute.
const rateWindow = time.Minute

// Config configures a Manager. The zero value gives the TS SmartProxy
// defaults: in every field 0 means the default, and for the limits and
// timeouts a negative value means unlimited (no timeout). MaxConnections'
// default is itself unlimited, as in TS.
type Config struct {
	// MaxConnections caps concurrent connections overall; 0 (the default:
	// TS has no global cap) or negative => unlimited.
	MaxConnections int
	// MaxConnectionsPerIP caps concurrent connections per client IP; 0 =>
	// 100, negative => unlimited.
	MaxConnectionsPerIP int
	// ConnectionRateLimitPerMinute caps Open attempts per client IP in a
	// sliding minute; 0 => 300, negative => unlimited.
	ConnectionRateLimitPerMinute int
	// InactivityTimeout closes connections without activity for this long;
	// 0 => 4h, negative => no inactivity timeout.
	InactivityTimeout time.Duration
	// KeepAliveTreatment is "standard" (default, "" too), "extended" or "immortal".
	KeepAliveTreatment KeepAliveTreatment
	// KeepAliveInactivityMultiplier scales InactivityTimeout for the
	// extended treatment; 0 => 6, negative is refused.
	KeepAliveInactivityMultiplier float64
	// MaxLifetime closes connections older than this; 0 => 24h, negative => unlimited.
	MaxLifetime time.Duration
	// MaxTrackedIPs bounds the per-IP entries kept; 0 => 100000, negative =>
	// unlimited. When exceeded, the least recently used entry without active
	// connections is evicted (losing its rate history).
	MaxTrackedIPs int
	// IPv6PrefixLen is how IPv6 clients are grouped for the per-IP limits
	// (global and per route), the rate limits and ByIP/TopIPs: one host
	// usually owns a whole /64, so limits per address would let it open
	// connections from 2^64 of them. 0 => 64; 128 => per address. IPv4
	// clients are always counted per address. Negative or above 128 is
	// refused.
	IPv6PrefixLen int
	// Now is the clock; nil => time.Now. Tests inject a fake clock.
	Now func() time.Time
}

// Validate reports configuration errors; each error names the offending field.
func (c Config) Validate() error {
	switch c.KeepAliveTreatment {
	case "", KeepAliveStandard, KeepAliveExtended, KeepAliveImmortal:
	default:
		return fmt.Errorf("connection: KeepAliveTreatment %q: want %q, %q or %q",
			c.KeepAliveTreatment, KeepAliveStandard, KeepAliveExtended, KeepAliveImmortal)
	}
	if c.IPv6PrefixLen < 0 || c.IPv6PrefixLen > 128 {
		return fmt.Errorf("connection: IPv6PrefixLen %d: want 1..128 (0 for the default %d)", c.IPv6PrefixLen, DefaultIPv6PrefixLen)
	}
	m := c.KeepAliveInactivityMultiplier
	if math.IsNaN(m) || math.IsInf(m, 0) || m < 0 {
		return fmt.Errorf("connection: KeepAliveInactivityMultiplier %v: must be a finite value >= 0", m)
	}
	return nil
}

// settings is Config with defaults resolved. For every limit, 0 means
// unlimited/disabled, which keeps the hot-path checks to one comparison.
type settings struct {
	maxConns    int64
	maxPerIP    int
	ratePerMin  int
	inactivity  time.Duration // effective, after keep-alive treatment
	lifetime    time.Duration
	maxTracked  int64
	sweepPeriod time.Duration
	v6Bits      int // IPv6 clients are keyed per /v6Bits
}

// resolve applies "0 => default, negative => unlimited/disabled (0)".
func resolve[T int | time.Duration](v, def T) T { return max(cmp.Or(v, def), 0) }

func (c Config) resolve() settings {
	s := settings{
		maxConns:   int64(max(c.MaxConnections, 0)),
		maxPerIP:   resolve(c.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP),
		ratePerMin: resolve(c.ConnectionRateLimitPerMinute, DefaultConnectionRateLimitPerMinute),
		lifetime:   resolve(c.MaxLifetime, DefaultMaxLifetime),
		maxTracked: int64(resolve(c.MaxTrackedIPs, DefaultMaxTrackedIPs)),
		v6Bits:     resolve(c.IPv6PrefixLen, DefaultIPv6PrefixLen),
	}
	inact := resolve(c.InactivityTimeout, DefaultInactivityTimeout)
	switch c.KeepAliveTreatment {
	case KeepAliveImmortal:
		inact = 0
	case KeepAliveExtended:
		mult := cmp.Or(c.KeepAliveInactivityMultiplier, DefaultKeepAliveInactivityMultiplier)
		// A huge multiplier would overflow Duration; treat it as "never".
		if f := float64(inact) * mult; f >= math.MaxInt64 {
			inact = 0
		} else {
			inact = time.Duration(f)
		}
	}
	s.inactivity = inact
	s.sweepPeriod = sweepInterval(s.inactivity, s.lifetime)
	return s
}

// sweepInterval is min(timeout/4, 1s) clamped to >= 10ms, where timeout is
// the shortest enabled timeout. A quarter of the timeout bounds how late a
// connection is closed to 25%, while 1s keeps the default (hours) cheap.
func sweepInterval(timeouts ...time.Duration) time.Duration {
	iv := time.Second
	for _, t := range timeouts {
		if t > 0 {
			iv = min(iv, t/4)
		}
	}
	return max(iv, 10*time.Millisecond)
}
