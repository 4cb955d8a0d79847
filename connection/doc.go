// Package connection is the connection manager of the proxy: it keeps one
// Record per proxied client connection, enforces admission limits (global
// concurrent cap, per-IP concurrent cap, per-IP connection rate, and per
// route: concurrent cap, per-IP concurrent cap and per-IP rate), closes connections that outlive their inactivity or
// lifetime budget, and exposes metrics (counts, bytes, throughput, top IPs).
//
// It mirrors the connection handling of the TypeScript @push.rocks/smartproxy:
// the zero Config yields the same defaults (100 connections per IP, 300 new
// connections per IP per minute, 4h inactivity timeout, 24h max lifetime,
// keep-alive multiplier 6).
//
// # Lifecycle
//
// The accept loop calls [Manager.Open] for every accepted socket; on error
// (a [*LimitError]) it closes the socket. Once routing has picked a route it
// calls [Manager.AssignRouteLimits] (or [Manager.AssignRoute] for the route
// cap alone). The data pumps call [Record.AddIn] and
// [Record.AddOut] per chunk. When the proxied connection ends, its owner calls
// [Manager.Close]. [Manager.Run] must be running for timeouts, throughput
// sampling and per-IP state pruning to happen.
//
// The manager never removes a record on its own: on timeout or
// [Manager.CloseAll] it calls the record's closer, which makes the owner's
// pumps fail and the owner then calls Close. This keeps exactly one party
// responsible for releasing counters.
//
// # Memory bounds
//
// Per-IP state (concurrent count plus an O(1) sliding-window rate counter) is
// kept in a sharded table. Entries without open connections are kept only
// while their rate window still matters, and at most Config.MaxTrackedIPs
// entries are kept overall: when a new address would exceed the cap, the
// least recently used entry without open connections is evicted (LRU within
// a shard, shards tried round-robin). Entries with open connections are never
// evicted, so the table can exceed the cap only by the number of distinct
// client addresses that currently hold a connection. The per-route per-IP
// state of [RouteLimits] lives in a second table with the same rules and
// the same cap.
package connection
