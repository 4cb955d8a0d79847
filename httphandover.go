package smartproxy

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// handover gives an HTTP/1.x connection to a socket-handler route that a
// request matched (for example a catch-all HTTPRedirectHandler next to
// HTTP routes on port 80): the connection is hijacked and the handler
// reads the request again, re-serialised, followed by whatever the client
// sent after it. The connection then belongs to the handler. HTTP/2
// streams cannot be handed over and get 421.
func (h *httpLayer) handover(w http.ResponseWriter, r *http.Request, pr *proxyReq) {
	if r.ProtoMajor != 1 {
		http.Error(w, "421 this route takes HTTP/1.x only", http.StatusMisdirectedRequest)
		return
	}
	head := requestHead(r)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	// The handler counts the traffic itself (runHandler).
	pr.hc.meter.on.Store(false)
	if n := brw.Reader.Buffered(); n > 0 {
		rest, _ := brw.Reader.Peek(n)
		head = append(head, rest...)
	}
	h.p.runHandler(&replayConn{Conn: conn, pending: head}, pr.hc.rec, &pr.rc)
}

// requestHead re-serialises the head of a server-side HTTP/1.x request as
// the client sent it (header names canonicalised).
func requestHead(r *http.Request) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/%d.%d\r\n", r.Method, r.RequestURI, r.ProtoMajor, r.ProtoMinor)
	if r.Host != "" {
		b.WriteString("Host: " + r.Host + "\r\n")
	}
	if len(r.TransferEncoding) > 0 {
		b.WriteString("Transfer-Encoding: " + strings.Join(r.TransferEncoding, ", ") + "\r\n")
	} else if r.ContentLength > 0 && r.Header.Get("Content-Length") == "" {
		b.WriteString("Content-Length: " + strconv.FormatInt(r.ContentLength, 10) + "\r\n")
	}
	_ = r.Header.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// replayConn yields pending before reading the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// CloseWrite half-closes when the conn beneath can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
