package evloop

import "errors"

// Stream decodes an adopted connection's socket bytes and encodes the bytes written to it
// (TLS). The loop calls it on its own goroutine only, from Adopt's return until OnClose or a
// hand-off.
type Stream interface {
	// Feed gives the stream bytes read from the socket. b is the loop's buffer, valid until
	// the Read that follows returns: what the stream keeps past it, it copies.
	Feed(b []byte)
	// Read moves decoded bytes into p. It returns ErrWouldBlock when it needs more bytes
	// from the socket, io.EOF once the peer ended the stream, and any other error for a
	// stream that is broken.
	Read(p []byte) (int, error)
	// Encode appends to dst the bytes to write for p: first any the stream has to send of
	// its own accord (a TLS key update's answer), then p encoded.
	Encode(dst, p []byte) ([]byte, error)
	// End appends to dst the bytes the stream has to send when the loop closes the
	// connection: any it produced of its own accord (an alert for a record that failed), then
	// its end (a TLS close_notify). Written best effort.
	End(dst []byte) []byte
}

// ErrWouldBlock is what Stream.Read returns while it needs more bytes from the socket.
var ErrWouldBlock = errors.New("evloop: stream needs more bytes")

// ErrNotAdopted is Adopt's error when the Server is shutting down or closed, or has no
// OnRequest: the caller still owns the socket.
var ErrNotAdopted = errors.New("evloop: connection not adopted")
