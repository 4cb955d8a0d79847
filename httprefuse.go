package smartproxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"net/http"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// refuseWait bounds how long a connection refused at admission on an
// HTTP port is read for its request head, so the client gets an HTTP
// answer instead of a bare close. A client's request follows its
// handshake within a round trip; a flood of refused connections costs
// one short read and one write each.
const refuseWait = 100 * time.Millisecond

// refuseHTTPClient answers a client refused by the connection manager on
// a port that serves HTTP (a per-IP cap, a connection rate, the global
// cap): when the bytes that arrive within refuseWait start an HTTP/1.x
// request, it writes the refusal as HTTP (429 with Retry-After, or 503;
// see writeHTTPReject) and asks the client to close. Anything else (TLS,
// h2c, silence) is closed without a word, as before. The caller closes
// conn.
func refuseHTTPClient(conn net.Conn, err error) {
	var buf [4096]byte
	_ = conn.SetReadDeadline(time.Now().Add(refuseWait))
	n, _ := conn.Read(buf[:])
	if n == 0 || bytes.HasPrefix(buf[:n], []byte(h2ClientPreface[:16])) {
		return
	}
	if v, _, _ := classifyHTTP(buf[:n], false); v != verdictHTTP {
		return
	}
	var w rawResponse
	writeHTTPReject(&w, err)
	_ = conn.SetWriteDeadline(time.Now().Add(refuseWait))
	_, _ = conn.Write(w.bytes())
	// Half-close first so the response is delivered even if the client's
	// request was longer than what was read: closing with unread bytes
	// would make the kernel send a reset that can overtake it.
	if err := forwarding.CloseWrite(conn); !errors.Is(err, errors.ErrUnsupported) {
		_, _ = conn.Read(buf[:])
	}
}

// rawResponse is an http.ResponseWriter that collects one small response,
// for connections that are answered without the HTTP server.
type rawResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *rawResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *rawResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *rawResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// bytes serialises the response as HTTP/1.1 with Connection: close.
func (w *rawResponse) bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	h := w.Header()
	h.Set("Content-Length", fmt.Sprint(w.body.Len()))
	h.Set("Connection", "close")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	b.Write(w.body.Bytes())
	return b.Bytes()
}
