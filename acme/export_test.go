package acme

import "time"

// SetBackoff makes retries fast for tests: failed attempt n waits
// base·2^(n-1), at most cap, with jitter.
func SetBackoff(cfg *Config, base, cap time.Duration) {
	cfg.backoffBase, cfg.backoffCap = base, cap
}

// Backoff is the wait before retry n after err under m's settings.
func Backoff(m *Manager, n int, err error) time.Duration { return m.backoff(n, err) }

// PendHTTP makes token answerable for host, as prepare does for an
// HTTP-01 challenge of an order in progress.
func PendHTTP(m *Manager, host, token, keyAuth string) {
	m.chal.mu.Lock()
	defer m.chal.mu.Unlock()
	if m.chal.http == nil {
		m.chal.http = map[string]string{}
	}
	m.chal.http[host+"/"+token] = keyAuth
}
