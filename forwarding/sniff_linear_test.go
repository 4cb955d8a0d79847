package forwarding

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// recordConn is a net.Conn whose every Read returns exactly one TLS record of data, like a
// client that trickles a fragmented hello one record per segment.
type recordConn struct {
	net.Conn // nil; only Read is used
	data     []byte
}

func (c *recordConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := recordHeaderLen + (int(c.data[3])<<8 | int(c.data[4]))
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

func (c *recordConn) SetReadDeadline(time.Time) error { return nil }

func BenchmarkSniffOneByteRecords(b *testing.B) {
	records := tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{SNI: "x.test", Padding: 10 << 10}), 1) // ~10 KiB message, ~60 KiB of records
	b.SetBytes(int64(len(records)))
	for b.Loop() {
		pc := NewPeekConn(&recordConn{data: records})
		if _, err := SniffClientHello(pc, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSniffOneByteRecordsLinear: a hello split into 1-byte records and trickled one record
// per read used to be re-parsed from the start after every read (quadratic CPU). The scanner
// must visit each record a bounded number of times.
func TestSniffOneByteRecordsLinear(t *testing.T) {
	msg := tlstest.BuildHello(tlstest.HelloSpec{SNI: "x.test", Padding: 10 << 10})
	records := tlstest.ToRecords(msg, 1)
	pc := NewPeekConn(&recordConn{data: records})
	s := &recordScanner{msgLen: -1}
	info, err := sniffClientHello(pc, 1<<20, s)
	if err != nil || string(info.ServerName) != "x.test" {
		t.Fatalf("got %q, %v", info.ServerName, err)
	}
	if len(pc.Buffered()) != len(records) {
		t.Fatalf("buffered %d bytes, want %d", len(pc.Buffered()), len(records))
	}
	// One scan per read (len(msg) reads) plus one step per record completed.
	if limit := 2*len(msg) + 2; s.steps > limit {
		t.Fatalf("scanned %d records for a %d-record hello (limit %d): not linear", s.steps, len(msg), limit)
	}
	t.Logf("%d records, %d scanner steps", len(msg), s.steps)
}

// TestRecordScannerResumes checks the resumable scanner against a fresh scan of every
// prefix, however the records are cut.
func TestRecordScannerResumes(t *testing.T) {
	msg := tlstest.BuildHello(tlstest.HelloSpec{SNI: "example.test", Versions: []uint16{0x0304}, Padding: 300})
	for _, size := range []int{1, 2, 3, 5, 7, 100, len(msg)} {
		records := tlstest.ToRecords(msg, size)
		records = append(records, 0x17, 0x03, 0x03) // early bytes after the hello
		for _, chunk := range []int{1, 3, 6, 64} {
			s := recordScanner{msgLen: -1}
			for n := 0; ; n = min(n+chunk, len(records)) {
				gl, gs, ge, gn, gerr := s.scan(records[:n])
				wl, ws, we, wn, werr := scanRecords(records[:n])
				if gl != wl || gs != ws || ge != we || gn != wn || gerr != werr {
					t.Fatalf("size %d chunk %d prefix %d: resumed (%d %v %d %d %v), fresh (%d %v %d %d %v)",
						size, chunk, n, gl, gs, ge, gn, gerr, wl, ws, we, wn, werr)
				}
				if werr != ErrNeedMore {
					if werr != nil || we != len(records)-3 {
						t.Fatalf("size %d: end %d, %v", size, we, werr)
					}
					break
				}
			}
		}
	}
	// Errors found in later records are still reported after a resume.
	bad := tlstest.ToRecords(msg, 10)
	bad[15] = 0x17 // second record's type
	s := recordScanner{msgLen: -1}
	if _, _, _, _, err := s.scan(bad[:15]); err != ErrNeedMore {
		t.Fatal(err)
	}
	if _, _, _, _, err := s.scan(bad); err != errBadRecord {
		t.Fatalf("bad second record after resume: %v", err)
	}
}
