package h1parse

// TEMPORARY (lead's worktree): replaced by the CHUNKSCAN branch's scanner at merge.
type ChunkScanner struct{ st, size int64 }

func (s *ChunkScanner) Reset() { *s = ChunkScanner{} }

func (s *ChunkScanner) Scan(p []byte) (int, bool, error) {
	// minimal: size CRLF data CRLF ... 0 CRLF CRLF (no extensions, no trailers)
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch s.st {
		case 0: // size
			if c == '\r' {
				s.st = 1
			} else if h := unhex(c); h >= 0 {
				s.size = s.size*16 + int64(h)
			} else {
				return i, false, malformed("chunk size")
			}
		case 1:
			if c != '\n' {
				return i, false, malformed("chunk size line")
			}
			if s.size == 0 {
				s.st = 4
			} else {
				s.st = 2
			}
		case 2: // data
			n := int64(len(p) - i)
			if n > s.size {
				n = s.size
			}
			s.size -= n
			i += int(n) - 1
			if s.size == 0 {
				s.st = 3
			}
		case 3: // CRLF after data
			if c == '\r' {
				s.st = 5
			} else {
				return i, false, malformed("chunk end")
			}
		case 5:
			if c != '\n' {
				return i, false, malformed("chunk end")
			}
			s.st = 0
		case 4: // final CRLF
			if c == '\r' {
				s.st = 6
			} else {
				return i, false, malformed("trailers unsupported")
			}
		case 6:
			if c != '\n' {
				return i, false, malformed("final CRLF")
			}
			return i + 1, true, nil
		}
	}
	return len(p), false, nil
}
