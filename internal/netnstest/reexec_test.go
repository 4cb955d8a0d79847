//go:build linux

package netnstest

import (
	"errors"
	"os/exec"
	"testing"
)

// A re-executed child's outcome: a skipped subtest or a failed child is
// never read as the test skipping, and a child that could not start is a
// skip with the reason.
func TestChildVerdict(t *testing.T) {
	t.Parallel()
	exitErr := func() error {
		err := exec.Command("false").Run()
		if err == nil {
			t.Fatal("false succeeded")
		}
		return err
	}()
	tests := []struct {
		name string
		text string
		err  error
		want int
	}{
		{"pass", "=== RUN   TestX\n--- PASS: TestX (0.01s)\nPASS\n", nil, childPassed},
		{"skip", "=== RUN   TestX\n    x_test.go:9: no nft\n--- SKIP: TestX (0.00s)\nPASS\n", nil, childSkipped},
		{"subtest skipped, test failed", "=== RUN   TestX\n    --- SKIP: TestX/sub (0.00s)\n--- FAIL: TestX (0.01s)\nFAIL\n", exitErr, childFailed},
		{"subtest skipped, test passed", "=== RUN   TestX\n    --- SKIP: TestX/sub (0.00s)\n--- PASS: TestX (0.01s)\nPASS\n", nil, childPassed},
		{"other test's name", "--- PASS: TestXY (0.01s)\nPASS\n", nil, childFailed},
		{"nothing ran", "testing: warning: no tests to run\nPASS\n", nil, childFailed},
		{"not started", "", errors.New("fork/exec: operation not permitted"), childSkipped},
	}
	for _, tc := range tests {
		if got, msg := childVerdict("TestX", tc.text, tc.err); got != tc.want {
			t.Errorf("%s: verdict %d (%s), want %d", tc.name, got, msg, tc.want)
		}
	}
}
