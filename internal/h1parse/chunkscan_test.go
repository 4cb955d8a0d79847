package h1parse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// chunkCase is a chunked stream and what both ChunkReader and
// ChunkScanner make of it: its data, or a refusal (ErrMalformed).
type chunkCase struct {
	name, body string
	data       string // the decoded data, when accepted
	bad        bool   // refused with ErrMalformed
}

// chunkCases holds every case of TestChunkReader and the limits and
// line-end faults it does not name.
var chunkCases = []chunkCase{
	{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", false},
	{"extension", "5;a=b\r\nhello\r\n0\r\n\r\n", "hello", false},
	{"trailer and a next message", "2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: v\r\n\r\nG", "hello", false},
	{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", false},
	{"overflow", "10000000000000005\r\nhello\r\n0\r\n\r\n", "", true},
	{"16 digits", "ffffffffffffffff\r\nhello\r\n0\r\n\r\n", "", true},
	{"bare LF", "5\nhello\r\n0\r\n\r\n", "", true},
	{"bare LF in an extension", "5;a\nb\r\nhello\r\n0\r\n\r\n", "", true},
	{"data longer than its size", "3\r\nhello\r\n0\r\n\r\n", "", true},
	{"sign", "-5\r\nhello\r\n0\r\n\r\n", "", true},
	{"prefix", "0x5\r\nhello\r\n0\r\n\r\n", "", true},
	{"leading space", " 5\r\nhello\r\n0\r\n\r\n", "", true},
	{"no size", "\r\nhello\r\n0\r\n\r\n", "", true},
	{"bad trailer", "5\r\nhello\r\n0\r\nX : v\r\n\r\n", "", true},
	{"folded trailer", "5\r\nhello\r\n0\r\n X: v\r\n\r\n", "", true},
	{"NUL in an extension", "5;\x00\r\nhello\r\n0\r\n\r\n", "", true},

	{"15 digits, zeros", "000000000000005\r\nhello\r\n0\r\n\r\n", "hello", false},
	{"16 digits, zeros", "0000000000000005\r\nhello\r\n0\r\n\r\n", "", true},
	{"OWS before ;", "5 \t; a = \"b c\" \r\nhello\r\n000;x\r\n\r\n", "hello", false},
	{"OWS without ;", "5 \r\nhello\r\n0\r\n\r\n", "", true},
	{"junk after the size", "5x\r\nhello\r\n0\r\n\r\n", "", true},
	{"DEL in an extension", "5;\x7f\r\nhello\r\n0\r\n\r\n", "", true},
	{"high bytes in an extension", "5;\xff\r\nhello\r\n0\r\n\r\n", "hello", false},
	{"bare CR in the size line", "5\r;\r\nhello\r\n0\r\n\r\n", "", true},
	{"data shorter than its size", "6\r\nhello\r\n0\r\n\r\n", "", true},
	{"LF after data", "5\r\nhello\n0\r\n\r\n", "", true},
	{"CR CR LF after data", "5\r\nhello\r\r\n0\r\n\r\n", "", true},
	{"empty trailer value", "0\r\nX:\r\nY: \tv w\t\r\n\r\n", "", false},
	{"high bytes in a trailer", "0\r\nX: \x80\xff\r\n\r\n", "", false},
	{"trailer without a colon", "0\r\nX\r\n\r\n", "", true},
	{"trailer with an empty name", "0\r\n: v\r\n\r\n", "", true},
	{"control byte in a trailer", "0\r\nX: a\x01b\r\n\r\n", "", true},
	{"bare CR in a trailer", "0\r\nX: a\rb\r\n\r\n", "", true},
	{"bare LF in a trailer", "0\r\nX: v\n\r\n", "", true},
	{"bare LF ending the body", "0\r\n\n", "", true},
	{"bare CR ending the body", "0\r\n\rX\r\n", "", true},
	{"MaxFields trailers", "0\r\n" + strings.Repeat("X: y\r\n", MaxFields) + "\r\n", "", false},
	{"MaxFields+1 trailers", "0\r\n" + strings.Repeat("X: y\r\n", MaxFields+1) + "\r\n", "", true},
	{"longest size line", "5;" + strings.Repeat("x", maxChunkLine-4) + "\r\nhello\r\n0\r\n\r\n", "hello", false},
	{"size line too long", "5;" + strings.Repeat("x", maxChunkLine-3) + "\r\nhello\r\n0\r\n\r\n", "", true},
	{"longest trailer", "0\r\nX:" + strings.Repeat("v", maxChunkLine-4) + "\r\n\r\n", "", false},
	{"trailer too long", "0\r\nX:" + strings.Repeat("v", maxChunkLine-3) + "\r\n\r\n", "", true},
	{"big chunk", "1000\r\n" + strings.Repeat("z", 0x1000) + "\r\n0\r\n\r\n", strings.Repeat("z", 0x1000), false},
}

// readChunked is ChunkReader's verdict on body: the data, the offset
// where the body ended, and its error.
func readChunked(body []byte) (data []byte, end int, err error) {
	br := bufio.NewReader(bytes.NewReader(body))
	data, err = io.ReadAll(NewChunkReader(br))
	return data, len(body) - br.Buffered(), err
}

// scanPieces feeds body to a fresh ChunkScanner cut at cuts (sorted
// offsets), and returns where the body ended (the sum of n up to done),
// whether it did, and the error.
func scanPieces(body []byte, cuts []int) (s ChunkScanner, end int, done bool, err error) {
	prev := 0
	for _, c := range append(cuts, len(body)) {
		n, d, err := s.Scan(body[prev:c])
		end += n
		if err != nil {
			return s, end, false, err
		}
		if d {
			return s, end, true, nil
		}
		if n != c-prev {
			panic("Scan took part of a piece without ending or refusing")
		}
		prev = c
	}
	return s, end, false, nil
}

// randomCuts cuts a body of length n at up to 8 random offsets.
func randomCuts(r *rand.Rand, n int) []int {
	if n == 0 {
		return nil
	}
	cuts := make([]int, r.IntN(9))
	for i := range cuts {
		cuts[i] = r.IntN(n + 1)
	}
	for i := 1; i < len(cuts); i++ { // insertion sort: a handful of cuts
		for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
			cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
		}
	}
	return cuts
}

// TestChunkScanner: every case, fed whole, byte by byte and in random
// pieces, gets ChunkReader's verdict (checked here too) at the same end.
func TestChunkScanner(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range chunkCases {
		body := []byte(tc.body)
		data, end, err := readChunked(body)
		if tc.bad {
			require.ErrorIs(t, err, ErrMalformed, "ChunkReader, %s", tc.name)
		} else {
			require.NoError(t, err, "ChunkReader, %s", tc.name)
			require.Equal(t, tc.data, string(data), "ChunkReader, %s", tc.name)
		}
		bytewise := make([]int, len(body))
		for i := range bytewise {
			bytewise[i] = i
		}
		splits := [][]int{nil, bytewise}
		for range 20 {
			splits = append(splits, randomCuts(r, len(body)))
		}
		for _, cuts := range splits {
			s, got, done, serr := scanPieces(body, cuts)
			if tc.bad {
				require.ErrorIs(t, serr, ErrMalformed, "%s, cuts %v", tc.name, cuts)
				continue
			}
			require.NoError(t, serr, "%s, cuts %v", tc.name, cuts)
			require.True(t, done, "%s, cuts %v", tc.name, cuts)
			require.Equal(t, end, got, "%s: end, cuts %v", tc.name, cuts)
			require.Equal(t, int64(len(tc.data)), s.DataLen(), "%s, cuts %v", tc.name, cuts)
		}
	}
}

// TestChunkScannerCutShort: a body cut anywhere before its end is
// neither done nor refused, and the stream continued completes it.
func TestChunkScannerCutShort(t *testing.T) {
	t.Parallel()
	body := []byte("2;e=1\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: v\r\n\r\n")
	for i := range len(body) {
		var s ChunkScanner
		n, done, err := s.Scan(body[:i])
		require.NoError(t, err, "cut at %d", i)
		require.False(t, done, "cut at %d", i)
		require.Equal(t, i, n)
		n, done, err = s.Scan(body[i:])
		require.NoError(t, err, "cut at %d", i)
		require.True(t, done, "cut at %d", i)
		require.Equal(t, len(body)-i, n)
		require.Equal(t, int64(5), s.DataLen())
	}
}

// TestChunkScannerAfterEnd: after the end a call takes nothing, after a
// refusal it returns the refusal again; Reset starts a new body.
func TestChunkScannerAfterEnd(t *testing.T) {
	t.Parallel()
	var s ChunkScanner
	n, done, err := s.Scan([]byte("0\r\n\r\nGET / HTTP/1.1\r\n"))
	require.NoError(t, err)
	require.True(t, done)
	require.Equal(t, 5, n)
	n, done, err = s.Scan([]byte("more"))
	require.NoError(t, err)
	require.True(t, done)
	require.Zero(t, n)

	s.Reset()
	n, done, err = s.Scan([]byte("5\r\nhel"))
	require.NoError(t, err)
	require.False(t, done)
	require.Equal(t, 6, n)
	n, _, err = s.Scan([]byte("loX\r\n"))
	require.ErrorIs(t, err, ErrMalformed)
	require.Equal(t, 2, n, "the bytes before the refused one")
	_, _, err2 := s.Scan([]byte("\r\n0\r\n\r\n"))
	require.Same(t, err, err2)

	s.Reset()
	_, done, err = s.Scan([]byte("0\r\n\r\n"))
	require.NoError(t, err)
	require.True(t, done)
}

// FuzzChunkScanner checks ChunkScanner against ChunkReader (over a
// bufio.Reader) on the same stream, which Scan gets in pieces cut by
// seed: a stream ChunkReader accepts Scan accepts, ending it at the same
// byte with as many data bytes; one it refuses Scan refuses. On a
// stream that ends before ChunkReader decides (io.ErrUnexpectedEOF)
// Scan may not have ended it, and may have refused it already: the
// fuzzer also tries the continuations, where an early refusal of a
// stream ChunkReader accepts would show.
//
//	nice -n 19 go test -fuzz FuzzChunkScanner -fuzztime 60s ./internal/h1parse
func FuzzChunkScanner(f *testing.F) {
	for i, tc := range chunkCases {
		f.Add([]byte(tc.body), uint64(i))
	}
	f.Fuzz(func(t *testing.T, body []byte, seed uint64) {
		cuts := randomCuts(rand.New(rand.NewPCG(seed, seed>>32)), len(body))
		if msg := differ(body, cuts); msg != "" {
			t.Fatal(msg)
		}
	})
}

// differ compares ChunkReader's verdict on body with ChunkScanner's, fed
// body cut at cuts, as FuzzChunkScanner states it; "" when they agree.
func differ(body []byte, cuts []int) string {
	data, end, rerr := readChunked(body)
	s, got, done, serr := scanPieces(body, cuts)
	switch {
	case serr != nil && !errors.Is(serr, ErrMalformed):
		return fmt.Sprintf("Scan error %v does not wrap ErrMalformed", serr)
	case rerr == nil:
		if serr != nil || !done {
			return fmt.Sprintf("ChunkReader accepts %q, Scan (cuts %v): done %v, %v", body, cuts, done, serr)
		}
		if got != end || s.DataLen() != int64(len(data)) {
			return fmt.Sprintf("%q: ChunkReader ends at %d with %d data bytes, Scan at %d with %d",
				body, end, len(data), got, s.DataLen())
		}
	case errors.Is(rerr, ErrMalformed):
		if serr == nil {
			return fmt.Sprintf("ChunkReader refuses %q (%v), Scan (cuts %v): done %v at %d", body, rerr, cuts, done, got)
		}
	case errors.Is(rerr, io.ErrUnexpectedEOF):
		if done {
			return fmt.Sprintf("%q ends early for ChunkReader, Scan ends it at %d", body, got)
		}
	default:
		return fmt.Sprintf("ChunkReader: unexpected error %v", rerr)
	}
	return ""
}

// TestChunkScannerEveryByte: every byte value put in place of, and
// before, each byte of bodies that pass through every state gets the
// same verdict from both (a one-byte slip in a character class, which
// random fuzzing finds slowly, fails here at once).
func TestChunkScannerEveryByte(t *testing.T) {
	t.Parallel()
	bodies := []string{
		"a;e=\"v\"\r\n0123456789\r\n0\r\n\r\n",
		"5 \t; x\r\nhello\r\n0;y\r\nX-T: v w\r\nY:\r\n\r\n",
	}
	for _, b := range bodies {
		body := []byte(b)
		for i := range len(body) + 1 {
			for c := range 256 {
				in := append(append(append([]byte{}, body[:i]...), byte(c)), body[i:]...)
				cuts := []int{i, i + 1} // the new byte alone, as a piece
				if msg := differ(in, cuts); msg != "" {
					t.Fatal("insert:", msg)
				}
				if i < len(body) {
					in = bytes.Clone(body)
					in[i] = byte(c)
					if msg := differ(in, nil); msg != "" {
						t.Fatal("replace:", msg)
					}
				}
			}
		}
	}
}

// BenchmarkChunkScanner: a body fed in 16 KiB pieces to a reused
// scanner (0 allocations): 64 KiB in 4 KiB chunks with a trailer, the
// usual case, and 64-byte chunks, where the framing is a tenth of the
// stream.
func BenchmarkChunkScanner(b *testing.B) {
	for _, size := range []int{4096, 64} {
		var body []byte
		chunk := bytes.Repeat([]byte("x"), size)
		for range 64 << 10 / size {
			body = fmt.Appendf(body, "%x;n=v\r\n", size)
			body = append(body, chunk...)
			body = append(body, "\r\n"...)
		}
		body = append(body, "0\r\nServer-Timing: db;dur=53\r\n\r\n"...)
		b.Run(fmt.Sprintf("chunk=%d", size), func(b *testing.B) {
			var s ChunkScanner
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				s.Reset()
				for p := body; len(p) > 0; {
					q := p[:min(len(p), 16<<10)]
					n, done, err := s.Scan(q)
					if err != nil || done != (n == len(p)) {
						b.Fatal(n, done, err)
					}
					p = p[n:]
				}
			}
		})
	}
}

// TestScanChunksStopsAtTrailers: ScanChunks, fed a body in two pieces cut at every byte, stops
// right after the last chunk's size line (InTrailers), and Scan then takes the trailer section
// to the body's end, as Scan alone does.
func TestScanChunksStopsAtTrailers(t *testing.T) {
	for _, body := range []string{
		"3\r\nabc\r\n0\r\nX-Sum: 6\r\nContent-Length: 99\r\n\r\nNEXT",
		"3;ext=1\r\nabc\r\n000\r\n\r\nNEXT",
		"0\r\n\r\n",
	} {
		last := strings.Index(body, "\r\n0") + 3
		if strings.HasPrefix(body, "0") {
			last = 0
		}
		last += strings.Index(body[last:], "\r\n") + 2 // past the last size line
		end := strings.Index(body, "\r\n\r\n") + 4
		if strings.HasPrefix(body, "0\r\n\r\n") {
			end = 5
		}
		for cut := 0; cut <= len(body); cut++ {
			var s ChunkScanner
			a, b := []byte(body[:cut]), []byte(body[cut:])
			n, done, err := s.ScanChunks(a)
			if err != nil || done {
				t.Fatalf("%q cut %d: ScanChunks %d %v %v", body, cut, n, done, err)
			}
			at := n
			if !s.InTrailers() {
				if n != len(a) {
					t.Fatalf("%q cut %d: ScanChunks took %d of %d outside the trailers", body, cut, n, len(a))
				}
				m, _, err := s.ScanChunks(b)
				if err != nil || !s.InTrailers() {
					t.Fatalf("%q cut %d: second ScanChunks: %v, in trailers %v", body, cut, err, s.InTrailers())
				}
				at = len(a) + m
				a, b = nil, b[m:]
			} else {
				a = a[n:]
			}
			if at != last {
				t.Fatalf("%q cut %d: stopped at %d, want %d", body, cut, at, last)
			}
			rest := append(append([]byte(nil), a...), b...)
			m, done, err := s.Scan(rest)
			if err != nil || !done || at+m != end {
				t.Fatalf("%q cut %d: Scan took %d (end %d), done %v, %v", body, cut, m, at+m, done, err)
			}
		}
	}
}
