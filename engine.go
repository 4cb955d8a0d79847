package smartproxy

// Engine selects how the proxy serves TCP forwarding and TLS passthrough ports (see
// Options.Engine).
type Engine int

const (
	// EngineGoroutines serves every connection on goroutines and Go's net package: the
	// default.
	EngineGoroutines Engine = iota
	// EngineEventLoop serves those ports from event loops (internal/evloop):
	// raw accept4/connect, one epoll set per loop and per GOMAXPROCS, SO_REUSEPORT
	// listening sockets, no goroutine per connection. Linux only, and only when the proxy
	// opens its ports and dials its backends itself (no Options.Listen, no Options.Dial).
	// Ports whose routes are all plain TCP forwards or TLS passthrough (routed by SNI in the
	// loop) to IP-literal targets, with the default security checker, route matcher and
	// connection manager (the loop must never call code that may block), get event loops; the
	// others keep the goroutine path, and so do ports that receive PROXY headers, ports with
	// a route sending them, and ACME HTTP-01 ports. Should UpdateRoutes put such a route on a port that
	// has loops, its connections are handed to the goroutine path on accept. Differences
	// from the goroutine path: small messages move with recv/send through a per-loop buffer and bulk
	// transfers are spliced, and each backend
	// host tried gets the whole ConnectTimeout. Measured in bench/README.md ("Event-loop
	// engine").
	EngineEventLoop
)
