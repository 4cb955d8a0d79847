//go:build !linux

package forwarding

import "net"

// spliceCopy is Linux-only; elsewhere Pipe always uses the buffered copy.
func spliceCopy(*pipeDir, *net.TCPConn, *net.TCPConn) (int64, bool, error) {
	return 0, false, nil
}

// readWaiter is Linux-only; a nil waiter makes bufferCopy hold its buffer while waiting.
type readWaiter struct{}

func newReadWaiter(*net.TCPConn, *pipeDir) *readWaiter { return nil }

func (*readWaiter) wait() error { return nil }

// readAvailable is Linux-only; 0 makes PeekConn wait and read as a plain Read would.
func readAvailable(*net.TCPConn, []byte) int { return 0 }
