// Package netnstest gives tests real network namespaces: a test binary
// re-executes itself inside a new user, network and mount namespace
// (`unshare -Urnm`, which works rootless and as root), and each test then
// builds its own three-host topology there, client ↔ proxy ↔ backend,
// joined by veth pairs. Traffic only ever goes to addresses inside these
// namespaces. Linux only; tests skip with the reason elsewhere or when
// namespaces cannot be made.
package netnstest
