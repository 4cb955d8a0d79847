package main

import (
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if a scenario leaves a goroutine behind (a
// worker, or a connection's reader).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// benchHandler answers as bench/cmd/backend does: a POST's body is read and
// reported (length, CRC-32, Content-Length), then the 1 KiB body. corrupt
// changes what the "backend" saw or sends, as a faulty proxy would.
func benchHandler(corrupt string) http.Handler {
	body := httpBody()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if r.Method == http.MethodPost {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if corrupt == "post-body" {
				b[len(b)/2] ^= 1
			}
			h.Set("X-Body-Length", strconv.Itoa(len(b)))
			h.Set("X-Body-Crc32", fmt.Sprintf("%08x", crc32.ChecksumIEEE(b)))
			h.Set("X-Request-Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		out := body
		if corrupt == "response-body" {
			out = append([]byte(nil), body...)
			out[100] = '!'
		}
		h.Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
	})
}

// runScenario runs one short HTTP scenario against addr with the given
// flags, as run.sh would, and returns the result line.
func runScenario(t *testing.T, scen, address, suite string) *Result {
	t.Helper()
	*scenario, *addr, *cipher, *caFile, *sni = scen, address, suite, "", "term.bench.test"
	*conc, *duration, *warmup, *count = 2, 150*time.Millisecond, 30*time.Millisecond, 0
	res := &Result{Scenario: scen}
	if err := runHTTP(res); err != nil {
		t.Fatalf("runHTTP: %v", err)
	}
	return res
}

func TestHTTPScenariosVerify(t *testing.T) {
	for _, tc := range []struct {
		scen, corrupt, suite string
		wantErr              string // empty: the run must be valid
	}{
		{scen: "http"},
		{scen: "http-post"},
		{scen: "https"},
		{scen: "http", corrupt: "response-body", wantErr: "body mismatch"},
		{scen: "http-post", corrupt: "post-body", wantErr: "CRC-32"},
		{scen: "https", suite: "TLS_NO_SUCH_SUITE", wantErr: "cipher suite"},
	} {
		t.Run(tc.scen+"/"+tc.corrupt+tc.suite, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(benchHandler(tc.corrupt))
			if tc.scen == "https" {
				srv.StartTLS() // TLS 1.3 and ALPN http/1.1, as the proxies offer it
			} else {
				srv.Start()
			}
			defer srv.Close()
			res := runScenario(t, tc.scen, srv.Listener.Addr().String(), tc.suite)
			if tc.wantErr == "" {
				if !res.Valid || res.Ops == 0 {
					t.Fatalf("want a valid run with requests, got valid=%v ops=%d errors=%d (%s)", res.Valid, res.Ops, res.Errors, res.ErrorMsg)
				}
				if tc.scen == "https" && !strings.Contains(res.Note, "requests per connection") {
					t.Errorf("https note %q does not say how many requests each connection carried", res.Note)
				}
				return
			}
			if res.Valid || !strings.Contains(res.ErrorMsg, tc.wantErr) {
				t.Fatalf("want an invalid run with %q, got valid=%v error %q", tc.wantErr, res.Valid, res.ErrorMsg)
			}
		})
	}
}
