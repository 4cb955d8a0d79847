// Package tlstest provides helpers for tests that feed TLS ClientHello
// messages to the code under test: capturing the records a crypto/tls client
// writes first, re-splitting a hello into records of a chosen size, and
// hand-building hellos with a given server name and padding.
//
// It is shared by the tests of several packages, which cannot share _test.go
// files.
package tlstest

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

const (
	handshakeClientHello = 1
	extServerName        = 0
	extSupportedVersions = 43
	sniHostName          = 0
	extUnassigned        = 0xfe42 // an unknown extension that parsers must skip
)

// CaptureHello returns the bytes a crypto/tls client configured with cfg
// writes first: the records of its ClientHello. The records are delimited
// with an independent minimal reader, not with the code under test. It fails
// tb if the hello cannot be read within five seconds.
func CaptureHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c1, cfg).Handshake() // fails once c2 closes; only the hello matters
		_ = c1.Close()
	}()
	defer func() { _ = c2.Close(); <-done }()
	if err := c2.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		tb.Fatalf("setting read deadline: %v", err)
	}
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
	return out
}

// HandshakeMessage joins the fragments carried by a sequence of TLS records
// into the handshake message they make up.
func HandshakeMessage(records []byte) []byte {
	var msg []byte
	for len(records) >= 5 {
		n := int(binary.BigEndian.Uint16(records[3:]))
		msg = append(msg, records[5:5+n]...)
		records = records[5+n:]
	}
	return msg
}

// ToRecords splits a handshake message into handshake records of at most
// size bytes, as a client fragmenting its hello (to evade middleboxes, or
// because it is bigger than a record) does.
func ToRecords(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16, 0x03, 0x01, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// Refragment re-splits the records of a captured hello into records of at
// most size bytes.
func Refragment(records []byte, size int) []byte {
	return ToRecords(HandshakeMessage(records), size)
}

// HelloSpec describes a ClientHello for BuildHello.
type HelloSpec struct {
	SNI      string   // empty: no server_name extension
	Versions []uint16 // nil: no supported_versions extension
	Padding  int      // bytes of an extra unknown extension (0: none)
	Legacy   uint16   // legacy_version; 0 means 0x0303
}

// BuildHello returns a hand-made ClientHello handshake message (with its
// 4-byte header) as described by s.
func BuildHello(s HelloSpec) []byte {
	u16 := func(b []byte, v int) []byte { return append(b, byte(v>>8), byte(v)) }
	legacy := s.Legacy
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
	if s.SNI != "" {
		ext = u16(ext, extServerName)
		ext = u16(ext, len(s.SNI)+5)
		ext = u16(ext, len(s.SNI)+3)
		ext = append(ext, sniHostName)
		ext = u16(ext, len(s.SNI))
		ext = append(ext, s.SNI...)
	}
	if s.Versions != nil {
		ext = u16(ext, extSupportedVersions)
		ext = u16(ext, 1+2*len(s.Versions))
		ext = append(ext, byte(2*len(s.Versions)))
		for _, v := range s.Versions {
			ext = u16(ext, int(v))
		}
	}
	if s.Padding > 0 {
		ext = u16(ext, extUnassigned)
		ext = u16(ext, s.Padding)
		ext = append(ext, make([]byte, s.Padding)...)
	}
	body = u16(body, len(ext))
	body = append(body, ext...)
	n := len(body)
	return append([]byte{handshakeClientHello, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}
