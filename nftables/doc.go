// Package nftables forwards routes in the kernel: a Manager keeps one
// nftables table (family inet) in step with a set of Routes, each a DNAT
// of some ports, for TCP and/or UDP, over IPv4 and IPv6, to one or more
// hosts (balanced per connection with numgen), with optional masquerade,
// client allow and block lists (nft interval sets), and a limit on new
// connections or bandwidth. It speaks netlink through
// github.com/google/nftables and never runs the nft binary.
//
// Layout of the table: base chains prerouting and output (nat, DNAT of
// packets for an address of this host), postrouting (nat, masquerade) and
// forward (filter, counters and bandwidth limits) each jump to a chain per
// route; a route's chains and sets carry a generation in their names, so
// UpdateRoutes adds a changed route's new generation and deletes the old
// one in the same atomic batch, leaving unchanged routes (and their
// counters) alone. The chain "owner" holds a marker rule naming the
// process that made the table, so that a restart after a crash replaces
// the stale table and a second live process is refused.
//
// preserveSourceIP leaves the client's address on forwarded packets; the
// backend must then route its replies back through this host (it is the
// backend's default gateway, or it has a route to the clients' networks via
// this host), or they go straight to the client, which drops them.
//
// The process needs CAP_NET_ADMIN over its network namespace (New checks,
// returning ErrNoPermission with the fix), and forwarding sysctls for
// targets on other hosts (CheckSysctls). Linux only: elsewhere New returns
// ErrUnavailable.
package nftables
