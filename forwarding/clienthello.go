package forwarding

import (
	"errors"
	"fmt"
)

// ClientHelloInfo is what routing needs from a TLS ClientHello.
type ClientHelloInfo struct {
	// ServerName is the first host_name of the server_name extension, as the raw bytes the
	// client sent (no case folding, no validation). It aliases the buffer that was parsed
	// (the input data, or scratch for a fragmented hello): copy it before that buffer is
	// reused. It is empty when the client sent no SNI.
	ServerName []byte
	// MaxVersion is the highest protocol version offered: the largest non-GREASE value of
	// the supported_versions extension, or the legacy client_version when the extension is
	// absent (or lists only GREASE values).
	MaxVersion uint16
	// ALPN is the body of the first application_layer_protocol_negotiation extension (the
	// ProtocolNameList, RFC 7301 3.1) as sent, aliasing the parsed buffer like ServerName; nil
	// when the client sent none. It is not validated here (crypto/tls does that in the
	// handshake).
	ALPN []byte
}

// ErrNotTLS means the stream does not start with a TLS handshake record carrying a
// ClientHello: the first byte is not 0x16 (this includes SSLv2-compatible hellos and
// plaintext protocols), the record version is implausible, or the first handshake message is
// of another type. It is reported as soon as the bytes seen so far prove it.
var ErrNotTLS = errors.New("forwarding: not a TLS ClientHello")

// ErrNeedMore means the input ends before the ClientHello is complete; read more and retry.
var ErrNeedMore = errors.New("forwarding: incomplete ClientHello")

// ErrHelloTooLarge means the ClientHello is larger than the byte cap (64 KiB for the
// handshake message in ParseClientHello, or maxBytes in SniffClientHello).
var ErrHelloTooLarge = errors.New("forwarding: ClientHello too large")

// ErrMalformedHello means the records or the ClientHello are structurally invalid. Errors
// returned for it wrap it with detail; test with errors.Is.
var ErrMalformedHello = errors.New("forwarding: malformed ClientHello")

// Details of ErrMalformedHello, prebuilt so hostile input does not make the parser allocate.
var (
	errBadRecord      = fmt.Errorf("%w: bad record header", ErrMalformedHello)
	errEmptyRecord    = fmt.Errorf("%w: zero-length handshake record", ErrMalformedHello)
	errLongRecord     = fmt.Errorf("%w: record longer than 16384 bytes", ErrMalformedHello)
	errBadBody        = fmt.Errorf("%w: truncated or invalid field", ErrMalformedHello)
	errBadExtension   = fmt.Errorf("%w: invalid extension", ErrMalformedHello)
	errDupExtension   = fmt.Errorf("%w: duplicate extension", ErrMalformedHello)
	errTrailingBytes  = fmt.Errorf("%w: trailing bytes after extensions", ErrMalformedHello)
	errBadLegacyVers  = fmt.Errorf("%w: bad client_version", ErrMalformedHello)
	errBadCompression = fmt.Errorf("%w: bad compression methods", ErrMalformedHello)
)

const (
	recordTypeHandshake  = 0x16
	recordHeaderLen      = 5
	handshakeHeaderLen   = 4
	maxRecordPayload     = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length MUST NOT exceed 2^14
	maxHelloLen          = 1 << 16 // handshake message cap, like crypto/tls' maxHandshake
	handshakeClientHello = 1
	extServerName        = 0
	extSupportedVersions = 43
	extALPN              = 16
	sniHostName          = 0
)

// ParseClientHello parses a ClientHello from the first bytes of a TLS stream (one or more
// TLS records). scratch is used to reassemble a handshake message split across several
// records; it may be nil, then a fragmented hello makes ParseClientHello allocate. The common
// single-record case allocates nothing. Bytes after the ClientHello are ignored.
//
// When err is ErrNeedMore, need is a lower bound on len(data) required to make progress
// (always > len(data)); read at least that much and call again with the longer input. need
// is 0 otherwise. The handshake message is capped at 64 KiB (ErrHelloTooLarge).
//
// info.ServerName aliases data (single record) or scratch/a fresh buffer (fragmented).
func ParseClientHello(data []byte, scratch []byte) (info ClientHelloInfo, need int, err error) {
	info, _, need, err = parseClientHello(data, scratch)
	return info, need, err
}

// parseClientHello is ParseClientHello that also reports end, the number of bytes of data
// the hello occupies (record headers included), so SniffClientHello can enforce its cap.
func parseClientHello(data []byte, scratch []byte) (info ClientHelloInfo, end, need int, err error) {
	msgLen, single, end, need, err := scanRecords(data)
	if err != nil {
		return ClientHelloInfo{}, 0, need, err
	}
	var msg []byte
	if single {
		msg = data[recordHeaderLen : recordHeaderLen+msgLen]
	} else {
		msg = gatherFragments(data, msgLen, scratch)
	}
	info, err = parseHelloBody(msg[handshakeHeaderLen:])
	return info, end, 0, err
}

// scanRecords walks the record layer without copying and decides whether data holds a
// whole ClientHello. It returns the handshake message length (header included) and whether
// the message lies entirely in the first record, and where in data the message ends. Every
// length is checked against what is present, and every iteration consumes at least one
// record header, so it cannot loop.
func scanRecords(data []byte) (msgLen int, single bool, end, need int, err error) {
	s := recordScanner{msgLen: -1}
	return s.scan(data)
}

// recordScanner is scanRecords made resumable: it remembers how far the whole records
// already validated reach, so a caller that sees the stream grow (SniffClientHello) scans
// each record once instead of re-walking the prefix after every read. The zero value is not
// ready: set msgLen to -1.
type recordScanner struct {
	hdr    [handshakeHeaderLen]byte // the handshake header bytes seen so far
	got    int                      // handshake message bytes in the complete records scanned
	msgLen int                      // handshake message length; -1 until hdr is complete
	off    int                      // start of the first record not yet complete
	rec    int                      // index of that record
	steps  int                      // records visited, for tests to check the work is linear
}

// scan continues over data, which must extend (start with) the data of earlier calls. Only
// whole records are committed to the scanner; a truncated last record is looked at again
// next time, in constant time since only its header and first handshake bytes are read.
func (s *recordScanner) scan(data []byte) (msgLen int, single bool, end, need int, err error) {
	for ; ; s.rec++ {
		s.steps++
		h := data[s.off:]
		if err := checkRecordHeader(h, s.rec == 0); err != nil {
			return 0, false, 0, 0, err
		}
		if len(h) < recordHeaderLen {
			return 0, false, 0, s.off + recordHeaderLen + remaining(s.msgLen, s.got), ErrNeedMore
		}
		recLen := int(h[3])<<8 | int(h[4])
		if recLen == 0 {
			// RFC 8446 5.1 forbids empty handshake fragments; accepting them would let a
			// client stall routing with a stream of 5-byte records.
			return 0, false, 0, 0, errEmptyRecord
		}
		if recLen > maxRecordPayload {
			return 0, false, 0, 0, errLongRecord
		}
		frag := h[recordHeaderLen:]
		if len(frag) > recLen {
			frag = frag[:recLen]
		}
		// Work on copies: a truncated record must not change the scanner.
		hdr, got, msgLen := s.hdr, s.got, s.msgLen
		// Collect the handshake header as its bytes arrive; it may itself be fragmented.
		hb := 0
		if got < handshakeHeaderLen {
			hb = min(handshakeHeaderLen-got, len(frag))
			copy(hdr[got:], frag[:hb])
			got += hb
			if got > 0 && hdr[0] != handshakeClientHello {
				return 0, false, 0, 0, ErrNotTLS
			}
			if got == handshakeHeaderLen {
				msgLen = handshakeHeaderLen + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
				if msgLen > maxHelloLen {
					return 0, false, 0, 0, ErrHelloTooLarge
				}
			}
		}
		if msgLen >= 0 {
			got += len(frag) - hb
			if got >= msgLen {
				return msgLen, s.rec == 0, s.off + recordHeaderLen + len(frag) - (got - msgLen), 0, nil
			}
		}
		if len(frag) < recLen {
			// Truncated record: both the record's end and the message's end lie ahead.
			return 0, false, 0, s.off + recordHeaderLen + min(recLen, len(frag)+remaining(msgLen, got)), ErrNeedMore
		}
		s.hdr, s.got, s.msgLen = hdr, got, msgLen
		s.off += recordHeaderLen + recLen
	}
}

// remaining is the least number of handshake bytes still to come.
func remaining(msgLen, got int) int {
	if msgLen < 0 {
		return handshakeHeaderLen - got
	}
	return msgLen - got
}

// checkRecordHeader validates the bytes of a record header that are present. A bad first
// record means the peer does not speak TLS; a bad later one is a broken hello.
func checkRecordHeader(h []byte, first bool) error {
	bad := (len(h) >= 1 && h[0] != recordTypeHandshake) ||
		(len(h) >= 2 && h[1] != 3) ||
		(len(h) >= 3 && h[2] > 4)
	switch {
	case !bad:
		return nil
	case first:
		return ErrNotTLS
	default:
		return errBadRecord
	}
}

// gatherFragments copies the handshake message out of its records into scratch (or a new
// buffer when scratch is too small). scanRecords has already validated the layout.
func gatherFragments(data []byte, msgLen int, scratch []byte) []byte {
	buf := scratch[:0]
	if cap(buf) < msgLen {
		buf = make([]byte, 0, msgLen)
	}
	for off := 0; len(buf) < msgLen; {
		recLen := int(data[off+3])<<8 | int(data[off+4])
		frag := data[off+recordHeaderLen:]
		frag = frag[:min(len(frag), recLen, msgLen-len(buf))]
		buf = append(buf, frag...)
		off += recordHeaderLen + recLen
	}
	return buf
}
