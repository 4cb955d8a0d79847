package smartproxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package run if any test (or benchmark) leaves a
// goroutine behind: every proxy test must Stop its proxy and join its
// backends, and Stop itself must return only once nothing of the proxy runs.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
