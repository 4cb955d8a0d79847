//go:build !unix || aix

package h1client

import "net"

// peekAlive cannot peek without blocking here: idle connections are
// trusted, and a stale one is caught by the client's retry.
func peekAlive(net.Conn) bool { return true }
