//go:build !unix || aix

package h1client

import (
	"io"
	"net"
)

// prober cannot peek without blocking here: idle connections are
// trusted, and a stale one is caught by the client's retry.
type prober struct{}

func (p *prober) init(net.Conn) {}

func (p *prober) aliveNow() bool { return true }

// writeAwait writes b through w.
func (p *prober) writeAwait(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}
