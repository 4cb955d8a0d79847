package smartproxy

// Engine selects how the proxy moves the bytes of plain TCP forwarding ports (see
// Options.Engine).
type Engine int

const (
	// EngineGoroutines serves every connection on goroutines and Go's net package: the
	// default.
	EngineGoroutines Engine = iota
	// EngineEventLoop serves plain TCP forwarding ports from event loops (internal/evloop):
	// raw accept4/connect, one epoll set per loop and per GOMAXPROCS, SO_REUSEPORT
	// listening sockets, no goroutine per connection. Linux only, and only for ports opened
	// by the proxy itself (not through Options.Listen). A connection whose route needs more
	// than a byte-for-byte forward to IP-literal targets with the default security checker
	// (TLS, SNI, HTTP, socket handlers, HostFunc/PortFunc, host names, a custom
	// SecurityChecker) is handed to the goroutine path on accept.
	EngineEventLoop
)
