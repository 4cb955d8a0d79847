package connection

import "sort"

// Records returns a copy of every open record's state, sorted by ID (the
// admission order). It walks every open connection, so it costs O(open
// connections): meant for inspection (an admin API's connection list, a
// metrics scrape), not for a per-connection path.
func (m *Manager) Records() []RecordInfo {
	var out []RecordInfo
	m.ips.forEachRecord(func(r *Record) { out = append(out, r.Info()) })
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
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
