package nftables

import (
	"errors"
	"log/slog"
	"regexp"
)

// DefaultTableName is the table of a Manager whose Config names none.
const DefaultTableName = "smartproxy"

// Errors New and Start wrap, for errors.Is.
var (
	// ErrNoPermission: the process may not change nftables (it lacks
	// CAP_NET_ADMIN over its network namespace).
	ErrNoPermission = errors.New("nftables: the process lacks CAP_NET_ADMIN over its network namespace")
	// ErrUnavailable: the kernel has no nf_tables.
	ErrUnavailable = errors.New("nftables: nf_tables is not available in this kernel")
	// ErrTableInUse: another live process owns the table.
	ErrTableInUse = errors.New("nftables: the table belongs to another running process")
	// ErrForeignTable: a table of the name exists without our owner marker.
	ErrForeignTable = errors.New("nftables: a table of that name exists and was not made by smartproxy")
)

// Config configures a Manager.
type Config struct {
	// TableName names the manager's table (family inet). It identifies the
	// proxy instance: give each proxy in a network namespace its own, and
	// keep it across restarts so that a restart after a crash finds and
	// replaces the table the crashed process left. "" means
	// DefaultTableName.
	TableName string
	// NetNS, when not 0, is an open file of the network namespace to
	// manage (such as /run/netns/NAME) instead of the process's own. The
	// sysctl checks read the process's own namespace, so they are skipped.
	NetNS int
	// Logger receives warnings (stale tables replaced, sysctls that need
	// setting); nil means slog.Default().
	Logger *slog.Logger
}

var tableNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// Status is what a Manager has put in the kernel, read back from it.
type Status struct {
	// Table is the table's name (family inet); "" when not started.
	Table string
	// Routes are the installed routes, by name.
	Routes []RouteStatus
	// Warnings are kernel settings the routes need (see CheckSysctls).
	Warnings []string
}

// RouteStatus is one route's rules and the kernel's counters for it.
type RouteStatus struct {
	Name string
	// Rules is the number of rules in the route's chains (jump rules in
	// the base chains not counted).
	Rules int
	// Connections counts new connections (and new UDP flows) DNATed.
	Connections uint64
	// Packets and Bytes count the forwarded traffic of those connections,
	// both directions (not counted for targets on this host, whose packets
	// are not forwarded).
	Packets, Bytes uint64
	// Dropped counts packets dropped by the block list, the allow list and
	// maxRate.
	Dropped uint64
}
