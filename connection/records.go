package connection

import (
	"cmp"
	"slices"
)

// Records returns a copy of every open record's state, sorted by ID (the
// admission order). It walks every open connection, so it costs O(open
// connections): meant for inspection (an admin API's connection list, a
// metrics scrape), not for a per-connection path.
func (m *Manager) Records() []RecordInfo {
	out := make([]RecordInfo, 0, m.Active())
	m.ips.forEachRecord(func(r *Record) { out = append(out, r.Info()) })
	slices.SortFunc(out, func(a, b RecordInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// KilledBy returns the reason the manager closed the connection for
// (ReasonInactivity, ReasonLifetime, ReasonShutdown), or "" when it did
// not: the owner closed it. Access logs use it as the close reason.
func (r *Record) KilledBy() Reason {
	if i := r.killReason.Load(); i > 0 {
		return reasonByIndex[i-1]
	}
	return ""
}
