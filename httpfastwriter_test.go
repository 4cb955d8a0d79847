package smartproxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"github.com/stretchr/testify/require"
)

// writerOutput runs one response through a fast connection's writer over
// net.Pipe and returns what the client got, and the writes it came in.
func writerOutput(t *testing.T, respond func(w *fastWriter)) (string, int) {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	type result struct {
		got    string
		writes int
	}
	done := make(chan result)
	go func() {
		var r result
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				r.writes++ // net.Pipe hands over each Write whole when buf holds it
				r.got += string(buf[:n])
			}
			if err != nil {
				done <- r
				return
			}
		}
	}()
	fc := &fastConn{h: &httpLayer{}, conn: server}
	w := fc.writer(false)
	respond(w)
	w.finish()
	w.release()
	_ = server.Close()
	r := <-done
	return r.got, r.writes
}

// relayedRaw is a relayed head's field lines in a pooled buffer, as
// relayResponse hands them to relayHead.
func relayedRaw(lines string) []byte {
	return append(fastOutPool.Get().(*[fastOutSize]byte)[:0], lines...)
}

// TestFastWriterHeadInFront: the head goes in front of the body in the
// writer's own buffer (commitInPlace) and both leave in one write; a
// head too large for the room, a 1xx before it, a flushed (chunked) body
// and a body larger than the buffer come out the same as ever.
func TestFastWriterHeadInFront(t *testing.T) {
	t.Parallel()
	date := "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
	body := strings.Repeat("b", 1000)

	got, writes := writerOutput(t, func(w *fastWriter) {
		w.relayHead(200, relayedRaw(date+"X-A: 1\r\n"), int64(len(body)), true)
		_, _ = w.Write([]byte(body[:400]))
		_, _ = w.Write([]byte(body[400:]))
		b := w.base
		w.commit()
		require.Same(t, b, w.base, "no second buffer")
		require.Same(t, &b[fastHeadRoom], &w.out[len(w.out)-len(body)], "the body stayed where it was")
	})
	require.Equal(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"+date+"X-A: 1\r\n\r\n"+body, got)
	require.Equal(t, 1, writes, "head and body in one write")

	big := "X-Big: " + strings.Repeat("v", fastHeadRoom) + "\r\n"
	got, writes = writerOutput(t, func(w *fastWriter) {
		w.relayHead(200, relayedRaw(date+big), int64(len(body)), true)
		_, _ = w.Write([]byte(body))
	})
	require.Equal(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"+date+big+"\r\n"+body, got)
	require.Equal(t, 1, writes)

	got, _ = writerOutput(t, func(w *fastWriter) {
		w.Interim(&h1parse.Response{Status: 103, Fields: []h1parse.Field{{Name: []byte("Link"), Value: []byte("</a.css>")}}})
		w.Header().Set("Date", "x")
		_, _ = io.WriteString(w, "ok")
	})
	require.Equal(t, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: x\r\n\r\nok", got)

	got, _ = writerOutput(t, func(w *fastWriter) {
		w.Header().Set("Date", "x")
		_, _ = io.WriteString(w, "abc")
		w.Flush()
		_, _ = io.WriteString(w, "de")
	})
	require.Equal(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", got)

	large := strings.Repeat("L", 3*fastOutSize)
	got, _ = writerOutput(t, func(w *fastWriter) {
		w.Header().Set("Date", "x")
		w.Header().Set("Content-Length", "49152")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, large)
	})
	require.Equal(t, "HTTP/1.1 200 OK\r\nContent-Length: 49152\r\nDate: x\r\n\r\n"+large, got)
}
