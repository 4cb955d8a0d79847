//go:build linux

package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// envTest names the test a re-executed child runs alone.
const envTest = "SMARTPROXY_NETNSTEST_TEST"

// Mode is where Reexec runs a test.
type Mode string

// The modes.
const (
	// OwnNetns: a fresh user, network and mount namespace, whose network
	// namespace serves as the proxy host of NewHere's topology.
	OwnNetns Mode = "netns"
	// NoNetAdmin: a user namespace of its own, which has no capability
	// over the network namespace it stays in (so nftables refuses it).
	NoNetAdmin Mode = "nonetadmin"
)

var setupOnce sync.Once

// Reexec runs the calling test alone in a child process in mode. In the
// parent it reports the child's result and returns true: the test is done.
// In the child it returns false and the test goes on. It skips the test
// with the reason when the child cannot be made.
func Reexec(t *testing.T, mode Mode) (parent bool) {
	t.Helper()
	if os.Getenv(envTest) == t.Name() {
		if mode == OwnNetns {
			setupOnce.Do(func() {
				if err := setupInside(); err != nil {
					unavailable = err.Error()
				}
			})
			if unavailable != "" {
				skip(t, "network namespaces unavailable: "+unavailable)
			}
		}
		return false
	}
	args := []string{"-test.run=^" + t.Name() + "$", "-test.v"}
	var cmd *exec.Cmd
	switch mode {
	case OwnNetns:
		if _, err := exec.LookPath("unshare"); err != nil {
			skip(t, "unshare not installed (util-linux): "+err.Error())
		}
		if out, err := exec.Command("unshare", "-Urnm", "true").CombinedOutput(); err != nil {
			skipf(t, "cannot create namespaces (unshare -Urnm: %v: %s)", err, strings.TrimSpace(string(out)))
		}
		cmd = exec.Command("unshare", append([]string{"-Urnm", "--", os.Args[0]}, args...)...)
	case NoNetAdmin:
		cmd = exec.Command(os.Args[0], args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		}
	}
	cmd.Env = append(os.Environ(), envTest+"="+t.Name(), envInside+"=1")
	out, err := cmd.CombinedOutput()
	switch v, msg := childVerdict(t.Name(), string(out), err); v {
	case childSkipped:
		skipf(t, "child in %s: %s", mode, msg)
	case childFailed:
		t.Fatalf("child in %s: %s", mode, msg)
	}
	return true
}

// The outcomes of a re-executed test.
const (
	childPassed = iota
	childSkipped
	childFailed
)

// childVerdict reads a child's output and error. Only the test itself
// skipping is a skip (not a subtest, and never a child that also failed);
// a child that could not be started is a skip, since it says nothing
// about the code under test.
func childVerdict(name, text string, err error) (int, string) {
	var ee *exec.ExitError
	switch {
	case err != nil && !errors.As(err, &ee):
		return childSkipped, fmt.Sprintf("cannot start the child: %v\n%s", err, text)
	case err != nil:
		return childFailed, fmt.Sprintf("%v\n%s", err, text)
	case strings.Contains(text, "--- SKIP: "+name+" ("):
		return childSkipped, "skipped:\n" + text
	case !strings.Contains(text, "--- PASS: "+name+" ("):
		return childFailed, "ran no test:\n" + text
	}
	return childPassed, ""
}

// NewHere is New with the process's own network namespace as the proxy
// host (Prx is "", and In("", fn) runs fn here): for code that manages
// its own namespace, such as a Proxy with nftables routes. Call it in a
// test Reexec'd with OwnNetns.
func NewHere(t testing.TB) *Topology {
	t.Helper()
	return build(t, "")
}

// envRequire makes missing namespaces a failure instead of a skip (CI
// sets it, so that the kernel tests cannot silently not run).
const envRequire = "SMARTPROXY_REQUIRE_NETNS"

func skip(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(envRequire) != "" {
		t.Fatal(msg + " (and " + envRequire + " is set)")
	}
	t.Skip(msg)
}

func skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	skip(t, fmt.Sprintf(format, args...))
}
