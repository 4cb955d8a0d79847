package smartproxy

// The string enums of the route schema. Each is a string type so that a
// config file's JSON and YAML read exactly as the TS library writes them,
// while Go code names the values through the constants (and an untyped
// string literal still converts, as before).

// Algorithm chooses among the hosts of a route's target
// (action.loadBalancing.algorithm).
type Algorithm string

// The load-balancing algorithms.
const (
	// AlgorithmRoundRobin takes the hosts in turn. It is the default ("").
	AlgorithmRoundRobin Algorithm = "round-robin"
	// AlgorithmLeastConnections takes the host with the fewest active
	// connections through this proxy, round-robin among equals.
	AlgorithmLeastConnections Algorithm = "least-connections"
	// AlgorithmIPHash takes the host a hash of the client IP names, so one
	// client keeps its host while the set of healthy hosts is unchanged.
	AlgorithmIPHash Algorithm = "ip-hash"
	// AlgorithmRandom picks two hosts at random and takes the one with
	// fewer active connections (power of two choices).
	AlgorithmRandom Algorithm = "random"
)

// BackendProtocol is the HTTP version the proxy speaks to a route's
// backends (action.options.backendProtocol).
type BackendProtocol string

// The backend protocols.
const (
	// BackendHTTP1 is HTTP/1.1, over TLS with terminate-and-reencrypt.
	// It is the default ("").
	BackendHTTP1 BackendProtocol = "http1"
	// BackendH2C is HTTP/2 without TLS (prior knowledge); it cannot go
	// with terminate-and-reencrypt.
	BackendH2C BackendProtocol = "h2c"
	// BackendH2 is HTTP/2 over TLS; it needs terminate-and-reencrypt.
	BackendH2 BackendProtocol = "h2"
)

// ServerName is the name a terminate-and-reencrypt route sends to its
// backend as SNI and verifies the backend's certificate for
// (action.tls.backend.serverName): one of the modes below, or any other
// value, which is sent as written.
type ServerName string

// The server-name modes.
const (
	// ServerNameTarget sends the target host (as does "").
	ServerNameTarget ServerName = "target"
	// ServerNameOriginal sends the SNI the client sent to the proxy, so
	// one backend can serve several names; a client without SNI gets the
	// target host.
	ServerNameOriginal ServerName = "original"
)
