package forwarding

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

func TestParseClientHelloRealHellos(t *testing.T) {
	tests := []struct {
		name    string
		cfg     *tls.Config
		sni     string
		version uint16
		minSize int
	}{
		// Go's default key shares include X25519MLKEM768 (1216-byte share): a big hello.
		{"tls13-mlkem", tls13Config(), "Example.COM", tls.VersionTLS13, 1200},
		{"tls12-only", tls12Config(), "backend.test", tls.VersionTLS12, 0},
		{"no-sni", &tls.Config{InsecureSkipVerify: true}, "", tls.VersionTLS13, 0},
		{"x25519-only", &tls.Config{ServerName: "a.b", CurvePreferences: []tls.CurveID{tls.X25519}}, "a.b", tls.VersionTLS13, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello := tlstest.CaptureHello(t, tt.cfg)
			if len(hello) < tt.minSize {
				t.Fatalf("hello is %d bytes, want >= %d (key share missing?)", len(hello), tt.minSize)
			}
			check := func(t *testing.T, data, scratch []byte) {
				t.Helper()
				info, need, err := ParseClientHello(data, scratch)
				if err != nil || need != 0 {
					t.Fatalf("ParseClientHello: need=%d err=%v", need, err)
				}
				if string(info.ServerName) != tt.sni {
					t.Errorf("ServerName = %q, want %q", info.ServerName, tt.sni)
				}
				if info.MaxVersion != tt.version {
					t.Errorf("MaxVersion = %#04x, want %#04x", info.MaxVersion, tt.version)
				}
			}
			check(t, hello, nil)
			// Trailing bytes (early data, the next records) must not matter.
			check(t, append(bytes.Clone(hello), 0x17, 0x03, 0x03, 0, 1, 0xff), nil)
			for _, size := range []int{1, 3, 100, 1000} {
				frag := tlstest.Refragment(hello, size)
				check(t, frag, nil)
				check(t, frag, make([]byte, 0, 64<<10))
			}
		})
	}
}

// Every strict prefix must ask for more with a need that is a true lower bound: above the
// prefix length and not beyond the real length.
func TestParseClientHelloPrefixes(t *testing.T) {
	hello := tlstest.CaptureHello(t, tls13Config())
	for _, data := range [][]byte{hello, tlstest.Refragment(hello, 100), tlstest.Refragment(hello, 1), tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{SNI: "x", Padding: 20000}), 16384)} {
		for i := range len(data) {
			_, need, err := ParseClientHello(data[:i], nil)
			if !errors.Is(err, ErrNeedMore) {
				t.Fatalf("prefix %d/%d: err = %v, want ErrNeedMore", i, len(data), err)
			}
			if need <= i || need > len(data) {
				t.Fatalf("prefix %d/%d: need = %d, want in (%d, %d]", i, len(data), need, i, len(data))
			}
		}
	}
}

func TestParseClientHelloFragmentedAliasesScratch(t *testing.T) {
	frag := tlstest.Refragment(tlstest.CaptureHello(t, tls13Config()), 100)
	scratch := make([]byte, 0, 8<<10)
	info, _, err := ParseClientHello(frag, scratch)
	if err != nil {
		t.Fatal(err)
	}
	if string(info.ServerName) != "Example.COM" {
		t.Fatalf("ServerName = %q", info.ServerName)
	}
	// The name must live in scratch (not in a fresh allocation): wiping scratch wipes it.
	clear(scratch[:cap(scratch)])
	if !bytes.Equal(info.ServerName, make([]byte, len("Example.COM"))) {
		t.Fatal("fragmented hello was not reassembled in scratch")
	}
	allocs := testing.AllocsPerRun(100, func() { _, _, _ = ParseClientHello(frag, scratch[:0]) })
	if allocs != 0 {
		t.Errorf("fragmented parse with big enough scratch: %v allocs, want 0", allocs)
	}
}

func TestParseClientHelloZeroAlloc(t *testing.T) {
	hello := tlstest.CaptureHello(t, tls13Config())
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := ParseClientHello(hello, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("single-record parse: %v allocs, want 0", allocs)
	}
}

func TestParseClientHelloLarge(t *testing.T) {
	// ~20 KiB: like a hello carrying several post-quantum key shares; needs two records.
	msg := tlstest.BuildHello(tlstest.HelloSpec{SNI: "big.example", Versions: []uint16{0x0304, 0x0303}, Padding: 20000})
	data := tlstest.ToRecords(msg, 16384)
	if n := bytes.Count(data[:5], []byte{0x16}); n != 1 || len(data) < 16384+5+5 {
		t.Fatalf("setup: %d bytes", len(data))
	}
	info, _, err := ParseClientHello(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(info.ServerName) != "big.example" || info.MaxVersion != 0x0304 {
		t.Fatalf("got %q %#x", info.ServerName, info.MaxVersion)
	}
}

func TestParseClientHelloVersions(t *testing.T) {
	tests := []struct {
		versions []uint16
		legacy   uint16
		want     uint16
	}{
		{nil, 0x0301, 0x0301},
		{[]uint16{0x0a0a, 0x0304, 0x0303}, 0, 0x0304},
		{[]uint16{0x0303, 0xfafa}, 0, 0x0303},
		{[]uint16{0x2a2a}, 0x0303, 0x0303}, // only GREASE: fall back to legacy
	}
	for _, tt := range tests {
		data := tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{Versions: tt.versions, Legacy: tt.legacy}), 16384)
		info, _, err := ParseClientHello(data, nil)
		if err != nil {
			t.Fatalf("%v: %v", tt.versions, err)
		}
		if info.MaxVersion != tt.want || len(info.ServerName) != 0 {
			t.Errorf("%v: MaxVersion=%#x ServerName=%q, want %#x and none", tt.versions, info.MaxVersion, info.ServerName, tt.want)
		}
	}
}

func TestParseClientHelloErrors(t *testing.T) {
	good := tlstest.BuildHello(tlstest.HelloSpec{SNI: "a.example", Versions: []uint16{0x0304}})
	rec := func(msg []byte) []byte { return tlstest.ToRecords(msg, 16384) }
	withBodyLen := func(msg []byte, n int) []byte { // rewrite the handshake length
		m := bytes.Clone(msg)
		m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
		return m
	}
	dupSNI := tlstest.BuildHello(tlstest.HelloSpec{SNI: "a", Versions: []uint16{0x0304}})
	// Append a second server_name extension and fix up the lengths.
	extra := []byte{0, 0, 0, 6, 0, 4, 0, 0, 1, 'b'}
	dupSNI = append(dupSNI, extra...)
	dupSNI = withBodyLen(dupSNI, len(dupSNI)-4)
	extLenOff := 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2
	el := int(dupSNI[extLenOff])<<8 | int(dupSNI[extLenOff+1]) + len(extra)
	dupSNI[extLenOff], dupSNI[extLenOff+1] = byte(el>>8), byte(el)

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\n"), ErrNotTLS},
		{"one byte", []byte("G"), ErrNotTLS},
		{"sslv2", []byte{0x80, 0x2e, 0x01, 0x00, 0x02}, ErrNotTLS},
		{"alert first", []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}, ErrNotTLS},
		{"ccs first", []byte{0x14, 0x03, 0x03, 0x00, 0x01, 0x01}, ErrNotTLS},
		{"bad record major", []byte{0x16, 0x02}, ErrNotTLS},
		{"bad record minor", []byte{0x16, 0x03, 0x09}, ErrNotTLS},
		{"server hello", rec(append([]byte{2}, good[1:]...)), ErrNotTLS},
		{"server hello type only", []byte{0x16, 0x03, 0x01, 0x00, 0x10, 0x02}, ErrNotTLS},
		{"empty record", []byte{0x16, 0x03, 0x01, 0x00, 0x00}, ErrMalformedHello},
		{"record too long", []byte{0x16, 0x03, 0x01, 0x40, 0x01}, ErrMalformedHello},
		{"too large", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x01}, ErrHelloTooLarge},
		{"second record alert", append(tlstest.ToRecords(good[:10], 10), 0x15, 0x03, 0x03, 0x00, 0x02), ErrMalformedHello},
		{"empty body", rec([]byte{1, 0, 0, 0}), ErrMalformedHello},
		{"short body", rec(withBodyLen(good[:40], 36)), ErrMalformedHello},
		{"trailing bytes", rec(withBodyLen(append(bytes.Clone(good), 0), len(good)-3)), ErrMalformedHello},
		{"ext block overrun", rec(withBodyLen(good[:len(good)-1], len(good)-5)), ErrMalformedHello},
		{"duplicate sni", rec(dupSNI), ErrMalformedHello},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, need, err := ParseClientHello(tt.data, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if need != 0 {
				t.Errorf("need = %d with a final error", need)
			}
		})
	}
	if _, _, err := ParseClientHello(rec(good), nil); err != nil {
		t.Fatalf("control hello: %v", err)
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	hello := tlstest.CaptureHello(b, tls13Config())
	b.Run("single-record", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(hello)))
		for b.Loop() {
			if _, _, err := ParseClientHello(hello, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	frag := tlstest.Refragment(hello, 100)
	scratch := make([]byte, 0, 64<<10)
	b.Run("fragmented-100B-scratch", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frag)))
		for b.Loop() {
			if _, _, err := ParseClientHello(frag, scratch); err != nil {
				b.Fatal(err)
			}
		}
	})
}
