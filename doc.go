// Package smartproxy routes TCP, TLS and HTTP traffic by code-defined
// routes: one process, many ports, each connection matched by port, TLS
// SNI, client address and TLS version (and each HTTP request by host,
// path, method and headers), then forwarded to a backend (with splice(2)
// on Linux, or through the HTTP layer with its header, rewrite, redirect
// and auth actions) or handed to a Go function.
//
// The layers, from one-liner to full control:
//
//   - Route helpers such as HTTPSPassthroughRoute and PortRangeRoute, or
//     the fluent NewRoute builder, or plain Route literals, or a JSON/YAML
//     file in the TypeScript SmartProxy schema (ParseConfig, LoadConfig).
//   - New validates everything up front (each error names its route and
//     field); Start listens; UpdateRoutes swaps routes at runtime; Stop
//     drains and releases every goroutine.
//   - Options swaps the parts: the route matcher (MatcherFactory), the
//     security checker (SecurityChecker), the connection manager
//     (ConnectionManager, default connection.Manager), listeners and
//     dialers. ServeConn serves any net.Conn, for in-memory tests.
//
// Ownership: the proxy owns every connection it accepts or is given with
// ServeConn, and closes it. A SocketHandler may use the conn until it
// returns.
package smartproxy
