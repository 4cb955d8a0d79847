package h1parse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// maxChunkLine bounds a chunk-size line with its extensions, and a
// trailer field line.
const maxChunkLine = 4 << 10

// ChunkReader decodes a chunked body strictly: it returns the data and
// io.EOF after the last chunk and its trailer section, which is read and
// checked under the head's field rules and dropped. Any framing fault is
// an error wrapping ErrMalformed; the stream cannot be read past it.
type ChunkReader struct {
	// Trailer, when set, receives each trailer field (slices valid only
	// during the call).
	Trailer func(name, value []byte)

	br     *bufio.Reader
	left   int64 // data bytes left in the current chunk
	inData bool
	err    error
}

// NewChunkReader reads a chunked body from br.
func NewChunkReader(br *bufio.Reader) *ChunkReader { return &ChunkReader{br: br} }

// Reset makes c a new reader of br, keeping nothing of what it read (its
// Trailer included): a ChunkReader embedded in a reused struct serves
// every body without allocating.
func (c *ChunkReader) Reset(br *bufio.Reader) { *c = ChunkReader{br: br} }

// Buffered is how many bytes of the stream the reader holds unread: 0
// means the next Read may wait for its source.
func (c *ChunkReader) Buffered() int { return c.br.Buffered() }

// Read returns body data: as many chunks as are buffered and fit p, so
// that a framing fault in bytes that have arrived is found at once.
func (c *ChunkReader) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && c.err == nil {
		if !c.inData {
			if total > 0 && c.br.Buffered() == 0 {
				break // more would wait for the client
			}
			n, err := c.size()
			if err != nil {
				c.err = err
				break
			}
			if n == 0 {
				c.err = c.trailers()
				if c.err == nil {
					c.err = io.EOF
				}
				break
			}
			c.left, c.inData = n, true
		}
		q := p
		if int64(len(q)) > c.left {
			q = q[:c.left]
		}
		n, err := c.br.Read(q)
		total += n
		p = p[n:]
		c.left -= int64(n)
		if c.left == 0 {
			c.inData = false
			if err == nil {
				err = c.crlf()
			}
		}
		if err != nil {
			c.err = noEOF(err)
			break
		}
		if c.inData {
			break // the rest of this chunk has not arrived
		}
	}
	if total > 0 {
		if c.err == io.EOF {
			return total, nil // EOF on the next call
		}
		return total, c.err
	}
	return 0, c.err
}

// noEOF turns an end of stream inside the body into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// line reads one CRLF-terminated line of at most maxChunkLine bytes, without its CRLF.
func (c *ChunkReader) line() ([]byte, error) {
	b, err := c.rawLine()
	if err != nil {
		return nil, err
	}
	line, _, err := nextLine(b)
	return line, err
}

// rawLine reads one line of at most maxChunkLine bytes, its line end included (not yet
// checked: nextLine and scanField refuse a bare LF).
func (c *ChunkReader) rawLine() ([]byte, error) {
	b, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxChunkLine {
		return nil, malformed("chunk line too long")
	}
	if err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// size reads a chunk-size line: 1 to 15 hex digits, then optional
// extensions free of control bytes but HTAB.
func (c *ChunkReader) size() (int64, error) {
	line, err := c.line()
	if err != nil {
		return 0, err
	}
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i == 15 {
			return 0, malformed("chunk size over 15 hex digits")
		}
		n = n<<4 | int64(d)
	}
	if i == 0 {
		return 0, malformed("chunk size %q", line)
	}
	ext := line[i:]
	if len(ext) > 0 {
		ext = trimOWS(ext)
		if len(ext) == 0 || ext[0] != ';' {
			return 0, malformed("chunk size %q", line)
		}
		for _, ch := range ext {
			if ch < ' ' && ch != '\t' || ch == 0x7f {
				return 0, malformed("control byte in chunk extension")
			}
		}
	}
	return n, nil
}

// crlf reads the CRLF after a chunk's data.
func (c *ChunkReader) crlf() error {
	line, err := c.line()
	if err != nil {
		return err
	}
	if len(line) != 0 {
		return malformed("chunk data longer than its size")
	}
	return nil
}

// trailers reads the trailer section up to its empty line, each field line under the head's
// rules (scanField, the parser of head fields).
func (c *ChunkReader) trailers() error {
	for i := 0; ; i++ {
		b, err := c.rawLine()
		if err != nil {
			return err
		}
		if len(b) == 2 && b[0] == '\r' {
			return nil // the empty line
		}
		if i == MaxFields {
			return malformed("more than %d trailer fields", MaxFields)
		}
		f, _, err := scanField(b, 0)
		if err != nil {
			return err
		}
		if c.Trailer != nil {
			c.Trailer(f.Name, f.Value)
		}
	}
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// nextLine splits off the first CRLF-terminated line of b (which ends in
// CRLF); a CR or LF inside the line is refused. Chunk-size lines and the
// CRLF after a chunk's data are read with it.
func nextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, malformed("bare LF")
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, malformed("bare CR")
	}
	return line, b[i+1:], nil
}
