package acme

import "time"

// SetBackoff makes retries fast for tests: failed attempt n waits
// base·2^(n-1), at most cap, with jitter.
func SetBackoff(cfg *Config, base, cap time.Duration) {
	cfg.backoffBase, cfg.backoffCap = base, cap
}
