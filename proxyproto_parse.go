package smartproxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// Framing and parsing of received PROXY headers (see proxyproto.go):
// where a header ends is decided here, strictly and without reading past
// it; what it says is go-proxyproto's reading of exactly those bytes.

// frameProxyHeader returns the length of the header b starts with, or 0
// when more bytes are needed to tell. errNoProxyHeader: b does not start
// with a signature; other errors: a header that cannot be valid.
func frameProxyHeader(b []byte) (int, error) {
	switch sig := proxySignature(b); {
	case sig == 0:
		return 0, errNoProxyHeader
	case sig < 0:
		return 0, nil
	case sig == 1:
		end := bytes.IndexByte(b[:min(len(b), maxV1HeaderBytes)], '\n')
		if end >= 0 {
			return end + 1, nil
		}
		if len(b) >= maxV1HeaderBytes {
			return 0, fmt.Errorf("PROXY v1 header has no line end within %d bytes", maxV1HeaderBytes)
		}
		return 0, nil
	}
	if len(b) < v2FixedBytes {
		return 0, nil
	}
	if b[12]>>4 != 2 {
		return 0, fmt.Errorf("PROXY v2 header has version %d", b[12]>>4)
	}
	l := binary.BigEndian.Uint16(b[14:16])
	if l > proxyproto.MaxV2HeaderSize {
		return 0, fmt.Errorf("PROXY v2 header of %d bytes exceeds the %d-byte cap", l, proxyproto.MaxV2HeaderSize)
	}
	if n := v2FixedBytes + int(l); len(b) >= n {
		return n, nil
	}
	return 0, nil
}

// proxySignature tells which signature b starts with: 1 or 2, 0 for
// none, -1 while b is too short to tell.
func proxySignature(b []byte) int {
	short := false
	for v, sig := range [][]byte{sigV1, sigV2} {
		n := min(len(b), len(sig))
		if !bytes.Equal(b[:n], sig[:n]) {
			continue
		}
		if n == len(sig) {
			return v + 1
		}
		short = true
	}
	if short {
		return -1
	}
	return 0
}

// parseProxyHeader parses exactly one framed header with go-proxyproto
// and keeps what the proxy uses. Anything the library refuses, a TLV
// list that does not split, or a source address that names no client
// (unspecified, port 0) is an error.
func parseProxyHeader(b []byte) (*ProxyHeader, error) {
	br := bufio.NewReaderSize(bytes.NewReader(b), max(len(b), 16))
	hdr, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("malformed PROXY header: %w", err)
	}
	if br.Buffered() != 0 {
		return nil, fmt.Errorf("malformed PROXY header: %d bytes after its end", br.Buffered())
	}
	h := &ProxyHeader{Version: int(hdr.Version), Local: true}
	if src, dst, ok := hdr.TCPAddrs(); ok && hdr.Command.IsProxy() {
		h.Local = false
		h.Source = unmapped(src.AddrPort())
		h.Destination = unmapped(dst.AddrPort())
		if !h.Source.Addr().IsValid() || h.Source.Addr().IsUnspecified() || h.Source.Port() == 0 {
			return nil, fmt.Errorf("PROXY header names no client: source %v", h.Source)
		}
	}
	if hdr.Version == 2 {
		tlvs, err := hdr.TLVs()
		if err != nil {
			return nil, fmt.Errorf("malformed PROXY header TLVs: %w", err)
		}
		if err := h.setTLVs(tlvs); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *ProxyHeader) setTLVs(tlvs []proxyproto.TLV) error {
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_ALPN:
			h.ALPN = string(t.Value)
		case proxyproto.PP2_TYPE_AUTHORITY:
			h.Authority = string(t.Value)
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			if len(t.Value) > 128 {
				return fmt.Errorf("PROXY header unique ID of %d bytes (at most 128)", len(t.Value))
			}
			h.UniqueID = bytes.Clone(t.Value)
		case proxyproto.PP2_TYPE_SSL:
			s, err := tlvparse.SSL(t)
			if err != nil {
				return fmt.Errorf("malformed PROXY header SSL TLV: %w", err)
			}
			ps := &ProxySSL{ClientSSL: s.ClientSSL(), Verified: s.ClientSSL() && s.Verified()}
			ps.Version, _ = s.SSLVersion()
			ps.Cipher, _ = s.SSLCipher()
			ps.ClientCN, _ = s.ClientCN()
			h.SSL = ps
		}
	}
	return nil
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
