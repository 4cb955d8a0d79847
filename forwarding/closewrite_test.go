package forwarding

import (
	"errors"
	"io"
	"net"
	"testing"
)

// unwrapOnly is a wrapper with Unwrap but no CloseWrite of its own.
type unwrapOnly struct{ net.Conn }

func (u unwrapOnly) Unwrap() net.Conn { return u.Conn }

// noUnwrap hides the conn beneath: nothing can half-close it.
type noUnwrap struct{ net.Conn }

// TestCloseWrite: half-close through the conn itself or through Unwrap
// wrappers; ErrUnsupported when no conn in the chain can.
func TestCloseWrite(t *testing.T) {
	for name, wrap := range map[string]func(net.Conn) net.Conn{
		"bare":   func(c net.Conn) net.Conn { return c },
		"unwrap": func(c net.Conn) net.Conn { return unwrapOnly{unwrapOnly{c}} },
	} {
		t.Run(name, func(t *testing.T) {
			a, b := tcpPair(t)
			if err := CloseWrite(wrap(a)); err != nil {
				t.Fatal(err)
			}
			if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("peer read after CloseWrite: %d %v", n, err)
			}
		})
	}
	a, _ := tcpPair(t)
	if err := CloseWrite(noUnwrap{a}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite through a hiding wrapper: %v", err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if err := CloseWrite(c1); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on net.Pipe: %v", err)
	}
}
