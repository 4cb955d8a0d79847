package forwarding

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// FuzzParseClientHello checks that hostile input never panics and that results are
// consistent: with and without scratch, under re-fragmentation, and across prefixes.
func FuzzParseClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{tls13Config(), tls12Config(), {InsecureSkipVerify: true}} {
		h := tlstest.CaptureHello(f, cfg)
		f.Add(h)
		f.Add(tlstest.Refragment(h, 50))
	}
	f.Add(tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{SNI: "x.y", Versions: []uint16{0x0a0a, 0x0304}, Padding: 17000}), 16384))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x03})

	f.Fuzz(func(t *testing.T, data []byte) {
		info, need, err := ParseClientHello(data, nil)
		info2, need2, err2 := ParseClientHello(data, make([]byte, 0, 1024))
		if !errors.Is(err2, err) && !errors.Is(err, err2) || need != need2 ||
			!bytes.Equal(info.ServerName, info2.ServerName) || info.MaxVersion != info2.MaxVersion {
			t.Fatalf("scratch changed the result: (%q %x %d %v) vs (%q %x %d %v)",
				info.ServerName, info.MaxVersion, need, err, info2.ServerName, info2.MaxVersion, need2, err2)
		}
		switch {
		case errors.Is(err, ErrNeedMore):
			if need <= len(data) {
				t.Fatalf("need %d not beyond the %d bytes given", need, len(data))
			}
		case need != 0:
			t.Fatalf("need = %d with err %v", need, err)
		case err == nil:
			if info.ServerName != nil && len(info.ServerName) == 0 {
				t.Fatal("empty non-nil ServerName")
			}
			// The hello's extent must be within data and enough on its own.
			if _, end, _, errEnd := parseClientHello(data, nil); end > len(data) || errEnd != nil {
				t.Fatalf("end = %d of %d", end, len(data))
			} else if _, _, errCut := ParseClientHello(data[:end], nil); errCut != nil {
				t.Fatalf("data[:end] does not parse: %v", errCut)
			}
			// More bytes after a complete hello must not change anything.
			info3, _, err3 := ParseClientHello(append(bytes.Clone(data), 1, 2, 3), nil)
			if err3 != nil || !bytes.Equal(info3.ServerName, info.ServerName) || info3.MaxVersion != info.MaxVersion {
				t.Fatalf("trailing bytes changed the result: %v", err3)
			}
			// The same message in 7-byte records must parse identically.
			if msg := helloMessage(data); msg != nil {
				info4, _, err4 := ParseClientHello(tlstest.ToRecords(msg, 7), nil)
				if err4 != nil || !bytes.Equal(info4.ServerName, info.ServerName) || info4.MaxVersion != info.MaxVersion {
					t.Fatalf("re-fragmenting changed the result: %v", err4)
				}
			}
		}
		// A prefix decides only what the whole input decides: once a prefix gives a final
		// answer, the full input must give the same one.
		half := data[:len(data)/2]
		_, _, errHalf := ParseClientHello(half, nil)
		if errHalf != nil && !errors.Is(errHalf, ErrNeedMore) && !errors.Is(err, errHalf) {
			t.Fatalf("prefix said %v, whole input said %v", errHalf, err)
		}
	})
}

// helloMessage returns just the handshake message of a successfully parsed input.
func helloMessage(data []byte) []byte {
	msgLen, _, _, _, err := scanRecords(data)
	if err != nil {
		return nil
	}
	return gatherFragments(data, msgLen, nil)
}
