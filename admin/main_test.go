package admin_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: every test
// stops its proxy, its admin server and its browser.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
