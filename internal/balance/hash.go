package balance

import "net/netip"

// FNV-1a, written out so hashing a client allocates nothing, followed by a
// 64-bit finaliser so that hosts differing in one character get unrelated
// scores. Deterministic across processes: proxies behind the same DNS name
// send a client to the same backend.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashIP hashes a client IP; an IPv4-mapped IPv6 address hashes as the
// IPv4 address it maps.
func hashIP(ip netip.Addr) uint64 {
	h := uint64(fnvOffset)
	b := ip.Unmap().As16()
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

// hashString continues h over s and finalises it: a host's score.
func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
