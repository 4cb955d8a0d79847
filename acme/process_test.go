package acme_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// childEnv marks a run of the test binary as one "proxy process" of
// TestTwoProcessesOneStorage rather than a test run.
const childEnv = "ACME_TEST_CHILD_DIR"

// TestTwoProcessesOneStorage: two processes (this test binary run as a
// child, twice) manage one name on one FileStorage directory and start
// at the same moment: one orders, the other waits on the lock file and
// loads the stored certificate.
func TestTwoProcessesOneStorage(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	dir := t.TempDir()
	// Both start at one moment (after their slow -race start-up), so both
	// find the store empty and race for the lock.
	at := time.Now().Add(3 * time.Second).UnixNano()
	var wg sync.WaitGroup
	out := make([]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+dir, "ACME_TEST_DIRECTORY="+p.DirectoryURL, "ACME_TEST_MINICA="+p.MinicaPEMPath, fmt.Sprintf("ACME_TEST_AT=%d", at))
			b, err := cmd.CombinedOutput()
			out[i], errs[i] = string(b), err
		}()
	}
	wg.Wait()
	var serials []string
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("child %d: %v\n%s", i, errs[i], out[i])
		}
		_, s, ok := strings.Cut(out[i], "SERIAL ")
		if !ok {
			t.Fatalf("child %d printed no serial:\n%s", i, out[i])
		}
		serials = append(serials, strings.Fields(s)[0])
	}
	if serials[0] != serials[1] {
		t.Fatalf("processes serve %v: both ordered", serials)
	}
	if o := p.Orders(); o != 1 {
		t.Fatalf("%d orders from two processes, want 1", o)
	}
}

// runChild is one process of TestTwoProcessesOneStorage: it prints the
// serial it serves.
func runChild(dir string) int {
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(os.Getenv("ACME_TEST_MINICA"))
	if err != nil || !pool.AppendCertsFromPEM(pemBytes) {
		fmt.Println("minica:", err)
		return 1
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	m, err := acme.NewManager(acme.Config{
		Settings:   acme.Settings{DirectoryURL: os.Getenv("ACME_TEST_DIRECTORY")},
		Storage:    &acme.FileStorage{Dir: dir},
		HTTPClient: client,
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx := context.Background()
	defer m.Stop(ctx)
	if at, err := strconv.ParseInt(os.Getenv("ACME_TEST_AT"), 10, 64); err == nil {
		time.Sleep(time.Until(time.Unix(0, at)))
	}
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil || m.Start(ctx) != nil {
		fmt.Println("manage/start:", err)
		return 1
	}
	// Loaded from the store (the other process was quicker) or issued
	// here: either way, valid.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st := m.Status(); st[0].State == acme.StateValid {
			fmt.Println("SERIAL", st[0].Serial)
			return 0
		}
	}
	fmt.Println("no certificate:", m.Status())
	return 1
}
