//go:build linux

package nftables

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/gosmartproxy/smartproxy/internal/netnstest"
)

// The tests run in namespaces of their own (netnstest.Main re-executes
// the binary under unshare -Urnm); helper roles run a child process for
// the crash and capability tests.
func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(netnstest.Main(m, func(m *testing.M) int {
		// goleak.VerifyTestMain exits itself; run its check by hand.
		code := m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				os.Stderr.WriteString("goleak: " + err.Error() + "\n")
				return 1
			}
		}
		return code
	}))
}
