package forwarding

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// captureHello returns the bytes a crypto/tls client writes first (its ClientHello records).
// The records are delimited with an independent minimal reader, not with the code under
// test.
func captureHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c1, cfg).Handshake() // fails when c2 closes; only the hello matters
		c1.Close()
	}()
	var out []byte
	msgLen, got := -1, 0
	for msgLen < 0 || got < msgLen {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c2, hdr); err != nil {
			tb.Fatalf("reading record header: %v", err)
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
		if _, err := io.ReadFull(c2, body); err != nil {
			tb.Fatalf("reading record body: %v", err)
		}
		out = append(append(out, hdr...), body...)
		if msgLen < 0 {
			msgLen = 4 + (int(body[1])<<16 | int(body[2])<<8 | int(body[3]))
		}
		got += len(body)
	}
	c2.Close()
	<-done
	return out
}

// handshakeMessage extracts the handshake message from a sequence of records.
func handshakeMessage(records []byte) []byte {
	var msg []byte
	for len(records) >= 5 {
		n := int(binary.BigEndian.Uint16(records[3:]))
		msg = append(msg, records[5:5+n]...)
		records = records[5+n:]
	}
	return msg
}

// toRecords splits a handshake message into handshake records of at most size bytes, like
// a client that fragments its hello (legitimately or to evade middleboxes).
func toRecords(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16, 0x03, 0x01, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// refragment re-splits the records of a captured hello into records of size bytes.
func refragment(records []byte, size int) []byte {
	return toRecords(handshakeMessage(records), size)
}

// helloSpec describes a hand-built ClientHello.
type helloSpec struct {
	sni      string   // empty: no server_name extension
	versions []uint16 // nil: no supported_versions extension
	padding  int      // bytes of an extra unknown extension (0: none)
	legacy   uint16   // 0 means 0x0303
}

// buildHello returns a ClientHello handshake message (with its 4-byte header).
func buildHello(s helloSpec) []byte {
	u16 := func(b []byte, v int) []byte { return append(b, byte(v>>8), byte(v)) }
	legacy := s.legacy
	if legacy == 0 {
		legacy = 0x0303
	}
	body := u16(nil, int(legacy))
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 32)
	body = append(body, make([]byte, 32)...) // session id
	body = u16(body, 4)
	body = append(body, 0x13, 0x01, 0x13, 0x02)
	body = append(body, 1, 0) // compression: null
	var ext []byte
	if s.sni != "" {
		ext = u16(ext, extServerName)
		ext = u16(ext, len(s.sni)+5)
		ext = u16(ext, len(s.sni)+3)
		ext = append(ext, sniHostName)
		ext = u16(ext, len(s.sni))
		ext = append(ext, s.sni...)
	}
	if s.versions != nil {
		ext = u16(ext, extSupportedVersions)
		ext = u16(ext, 1+2*len(s.versions))
		ext = append(ext, byte(2*len(s.versions)))
		for _, v := range s.versions {
			ext = u16(ext, int(v))
		}
	}
	if s.padding > 0 {
		ext = u16(ext, 0xfe42) // unassigned: must be skipped
		ext = u16(ext, s.padding)
		ext = append(ext, make([]byte, s.padding)...)
	}
	body = u16(body, len(ext))
	body = append(body, ext...)
	n := len(body)
	return append([]byte{handshakeClientHello, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

func tls13Config() *tls.Config {
	return &tls.Config{ServerName: "Example.COM", InsecureSkipVerify: true}
}

func tls12Config() *tls.Config {
	return &tls.Config{ServerName: "backend.test", MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}
}
