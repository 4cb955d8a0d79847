package forwarding

import (
	"errors"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// HelloScanner shown a hello of 1-byte records one record more each time (a trickling client
// on an event loop) visits each record a bounded number of times, and finds the SNI.
func TestHelloScannerOneByteRecordsLinear(t *testing.T) {
	msg := tlstest.BuildHello(tlstest.HelloSpec{SNI: "x.test", Padding: 10 << 10})
	records := tlstest.ToRecords(msg, 1)
	var h HelloScanner
	for n := 6; ; n += 6 {
		info, err := h.Scan(records[:min(n, len(records))], 1<<20)
		if errors.Is(err, ErrNeedMore) {
			continue
		}
		if err != nil || string(info.ServerName) != "x.test" {
			t.Fatalf("got %q, %v", info.ServerName, err)
		}
		break
	}
	if limit := 2*len(msg) + 2; h.s.steps > limit {
		t.Fatalf("scanned %d records for a %d-record hello (limit %d): not linear", h.s.steps, len(msg), limit)
	}
}

// A hello whose header announces more than maxBytes is refused from its first bytes; non-TLS
// is told at once.
func TestHelloScannerRefusals(t *testing.T) {
	big := tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{SNI: "x.test", Padding: 24 << 10}), 1<<14)
	var h HelloScanner
	if _, err := h.Scan(big[:2000], 16<<10); !errors.Is(err, ErrHelloTooLarge) {
		t.Fatalf("24 KiB hello under a 16 KiB cap: %v", err)
	}
	var n HelloScanner
	if _, err := n.Scan([]byte("GET / HTTP/1.1\r\n"), 16<<10); !errors.Is(err, ErrNotTLS) {
		t.Fatalf("HTTP request: %v", err)
	}
}
