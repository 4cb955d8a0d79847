package h1parse

// ChunkScanner finds the end of a chunked body in a stream that arrives
// in pieces (an event loop relaying a response without a goroutine per
// body), and refuses every framing ChunkReader refuses, without copying
// or decoding: the caller passes the validated bytes on unchanged. Its
// state is a few integers, so a line split across pieces is continued,
// never buffered, and no call allocates.
//
// Trailer fields are only validated (under the head's field rules, at
// most MaxFields, each line under 4 KiB with its CR, as a size line with
// its extensions) and stay in the stream the caller forwards; they are
// not reported, and not checked against a list of fields a trailer may
// not carry (ChunkReader does not check that either).
//
// On a complete stream Scan and ChunkReader agree: both accept it and end
// it at the same byte, or both refuse it (FuzzChunkScanner checks this).
// On a stream cut short Scan may refuse earlier than ChunkReader, which
// judges a line only once its LF has arrived: Scan refuses at the first
// byte after which no continuation could be accepted.
//
// The zero value is ready to scan a body; Reset readies it for the next.
type ChunkScanner struct {
	left   int64 // data bytes left in the current chunk
	data   int64 // data bytes passed so far, framing excluded
	size   int64 // the chunk size read so far on a size line
	line   int   // bytes of the current line so far, LF excluded
	digits int   // hex digits read so far on a size line
	fields int   // trailer fields read so far
	state  scanState
	err    error
}

// scanState is where a ChunkScanner is in the chunked grammar.
type scanState uint8

const (
	scanSize         scanState = iota // size digits (the zero value: a body's start)
	scanSizeOWS                       // whitespace after the digits, before ';'
	scanExt                           // chunk extensions, after ';'
	scanSizeLF                        // CR seen at the end of a size line
	scanData                          // chunk data
	scanDataCR                        // the CR after chunk data
	scanDataLF                        // the LF after chunk data
	scanTrailerStart                  // a trailer line's first byte
	scanTrailerName                   // a trailer field's name
	scanTrailerValue                  // a trailer field's value
	scanTrailerLF                     // CR seen at the end of a trailer field
	scanEndLF                         // CR seen on the empty line ending the body
	scanDone                          // the body ended
	scanFailed                        // the framing was refused (err)
)

// The refusals of Scan, made once so that a refused body (an attacker's
// cheapest move) costs no allocation either. Each wraps ErrMalformed.
var (
	errChunkLineLong     = malformed("chunk line too long")
	errChunkSizeDigits   = malformed("chunk size over 15 hex digits")
	errChunkSize         = malformed("chunk size line is not 1*HEXDIG [OWS ; ext]")
	errChunkExtControl   = malformed("control byte in chunk extension")
	errChunkBareLF       = malformed("bare LF in chunked framing")
	errChunkBareCR       = malformed("bare CR in chunked framing")
	errChunkDataLong     = malformed("chunk data longer than its size")
	errChunkTrailerCount = malformed("more than %d trailer fields", MaxFields)
	errChunkObsFold      = malformed("obs-fold in trailer")
	errChunkTrailerLine  = malformed("trailer line is not a field")
	errChunkTrailerCtl   = malformed("control byte in trailer field")
)

// Reset readies s for a new body, keeping nothing of the last.
func (s *ChunkScanner) Reset() { *s = ChunkScanner{} }

// DataLen is how many data bytes (chunk payload, framing excluded) the
// scanner has passed so far.
func (s *ChunkScanner) DataLen() int64 { return s.data }

// Scan consumes p, a piece of the chunked stream; it returns how many
// bytes of p belong to the body (all of p unless the body ended inside
// it: then up to and including the final CRLF after the trailers),
// whether the body ended, and an error wrapping ErrMalformed for framing
// ChunkReader refuses. On an error n counts the bytes before the refused
// one; the error stays, and every later call returns it. After the body
// ended a call takes nothing: it returns 0 and true.
func (s *ChunkScanner) Scan(p []byte) (n int, done bool, err error) {
	return s.scan(p, false)
}

// ScanChunks is Scan stopping where the trailer section starts (after the
// last chunk's size line): n then counts the bytes up to there, and
// InTrailers reports it. A relay that filters trailers holds what follows
// and scans it with Scan; the two together take what Scan alone takes.
func (s *ChunkScanner) ScanChunks(p []byte) (n int, done bool, err error) {
	if s.InTrailers() {
		return 0, false, nil
	}
	return s.scan(p, true)
}

// InTrailers reports a scanner past the last chunk, in its trailer
// section (the final CRLF not yet seen).
func (s *ChunkScanner) InTrailers() bool {
	switch s.state {
	case scanTrailerStart, scanTrailerName, scanTrailerValue, scanTrailerLF, scanEndLF:
		return true
	}
	return false
}

func (s *ChunkScanner) scan(p []byte, chunksOnly bool) (n int, done bool, err error) {
	switch s.state {
	case scanFailed:
		return 0, false, s.err
	case scanDone:
		return 0, true, nil
	}
	i := 0
	for i < len(p) {
		if s.state == scanData {
			// The bulk of a body: skipped, not looked at.
			k := len(p) - i
			if int64(k) > s.left {
				k = int(s.left)
			}
			i += k
			s.left -= int64(k)
			s.data += int64(k)
			if s.left == 0 {
				s.state = scanDataCR
			}
			continue
		}
		k, err := s.frame(p[i:])
		i += k
		if err != nil {
			s.err, s.state = err, scanFailed
			return i, false, err
		}
		if s.state == scanDone {
			return i, true, nil
		}
		if chunksOnly && s.state == scanTrailerStart && s.fields == 0 && s.line == 0 {
			return i, false, nil // frame stops right after the last size line
		}
	}
	return i, false, nil
}

// frame takes framing bytes from p (in any state but scanData,
// scanDone and scanFailed) until chunk data starts, the body ends or p
// does; it returns how many it took and, when it stopped at a byte it
// refuses, why. One loop over the bytes, not a call per byte: framing
// is most of what is looked at in a stream of small chunks.
func (s *ChunkScanner) frame(p []byte) (int, error) {
	for i, c := range p {
		if c != '\n' {
			// As ChunkReader: a line of maxChunkLine bytes without its
			// LF is refused (its bufio.Reader is full).
			if s.line++; s.line >= maxChunkLine {
				return i, errChunkLineLong
			}
		}
		switch s.state {
		case scanSize:
			if d := unhex(c); d >= 0 {
				if s.digits == 15 {
					return i, errChunkSizeDigits // 15 digits cannot overflow an int64
				}
				s.size = s.size<<4 | int64(d)
				s.digits++
				continue
			}
			switch {
			case s.digits == 0: // no size: a sign, a prefix, a space or nothing
				return i, errChunkSize
			case c == ' ' || c == '\t':
				s.state = scanSizeOWS
			case c == ';':
				s.state = scanExt
			case c == '\r':
				s.state = scanSizeLF
			case c == '\n':
				return i, errChunkBareLF
			default:
				return i, errChunkSize
			}
		case scanSizeOWS:
			switch c {
			case ' ', '\t':
			case ';':
				s.state = scanExt
			default: // OWS must lead to ';' (a size with trailing OWS only is refused)
				return i, errChunkSize
			}
		case scanExt:
			switch {
			case c == '\r':
				s.state = scanSizeLF
			case c == '\n':
				return i, errChunkBareLF
			case c < ' ' && c != '\t' || c == 0x7f:
				return i, errChunkExtControl
			}
		case scanSizeLF:
			if c != '\n' {
				return i, errChunkBareCR
			}
			s.line = 0
			size := s.size
			s.size, s.digits = 0, 0
			if size != 0 {
				s.left, s.state = size, scanData
				return i + 1, nil
			}
			s.state = scanTrailerStart
			return i + 1, nil // where ScanChunks stops
		case scanDataCR:
			if c != '\r' {
				return i, errChunkDataLong
			}
			s.state = scanDataLF
		case scanDataLF:
			if c != '\n' {
				return i, errChunkBareCR
			}
			s.line, s.state = 0, scanSize
		case scanTrailerStart:
			switch {
			case c == '\r':
				s.state = scanEndLF
			case c == '\n':
				return i, errChunkBareLF
			case s.fields == MaxFields:
				return i, errChunkTrailerCount // this line is not empty: one field too many
			case c == ' ' || c == '\t':
				return i, errChunkObsFold
			case IsTokenChar(c):
				s.state = scanTrailerName
			default: // an empty name, or no field name at all
				return i, errChunkTrailerLine
			}
		case scanTrailerName:
			switch {
			case c == ':':
				s.state = scanTrailerValue
			case !IsTokenChar(c): // whitespace before the colon, a line without one
				return i, errChunkTrailerLine
			}
		case scanTrailerValue:
			switch {
			case c == '\r':
				s.state = scanTrailerLF
			case c == '\n':
				return i, errChunkBareLF
			case c < ' ' && c != '\t' || c == 0x7f:
				return i, errChunkTrailerCtl
			}
		case scanTrailerLF:
			if c != '\n' {
				return i, errChunkBareCR
			}
			s.fields++
			s.line, s.state = 0, scanTrailerStart
		case scanEndLF:
			if c != '\n' {
				return i, errChunkBareCR
			}
			s.state = scanDone
			return i + 1, nil
		}
	}
	return len(p), nil
}
