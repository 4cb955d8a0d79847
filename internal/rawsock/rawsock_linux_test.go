//go:build linux

package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pair returns a raw client conn and the server side of a loopback TCP connection.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	s, err := ln.AcceptTCP()
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	rc, ok := Wrap(c).(*Conn)
	require.True(t, ok, "a *net.TCPConn is wrapped")
	return rc, s
}

// TestConnStream: bytes both ways, more than the socket buffers hold (the
// write waits in the poller for room), in order, then EOF after the
// peer's half-close.
func TestConnStream(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	require.NoError(t, c.SetWriteBuffer(4096))
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	echoed := make(chan error, 1)
	go func() { // the peer echoes slowly at first, so the raw write finds the socket full
		time.Sleep(10 * time.Millisecond)
		_, err := io.Copy(s, s)
		if err == nil {
			err = s.CloseWrite()
		}
		echoed <- err
	}()
	wrote := make(chan error, 1)
	go func() {
		n, err := c.Write(data)
		if err == nil && n != len(data) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(c) // reads until the echo's EOF
	require.NoError(t, err)
	require.NoError(t, <-wrote)
	require.NoError(t, <-echoed)
	require.True(t, bytes.Equal(data, got), "echo differs (%d bytes of %d)", len(got), len(data))
	n, err := c.Read(make([]byte, 1))
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF)
}

// TestConnDeadline: a read past its deadline fails as a TCPConn's does (a
// timeout net.Error, os.ErrDeadlineExceeded), loses nothing, and a read
// after the deadline is cleared gets the bytes.
func TestConnDeadline(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	buf := make([]byte, 16)
	_, err := c.Read(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())

	_, err = s.Write([]byte("late"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	n, err := io.ReadAtLeast(c, buf, 4)
	require.NoError(t, err)
	require.Equal(t, "late", string(buf[:n]))

	require.NoError(t, c.SetWriteDeadline(time.Now().Add(-time.Second)))
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// TestConnClosed: I/O on a closed conn fails with net.ErrClosed, and a
// read blocked in the poller is woken by Close.
func TestConnClosed(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the read park (the test passes either way)
	require.NoError(t, c.Close())
	require.ErrorIs(t, <-done, net.ErrClosed)
	_, err := c.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestConnWriteReset: writes to a peer that reset the connection fail with
// EPIPE or ECONNRESET in an *net.OpError, and raise no SIGPIPE.
func TestConnWriteReset(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	require.NoError(t, s.SetLinger(0))
	require.NoError(t, s.Close()) // RST
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Write(make([]byte, 1024))
		time.Sleep(time.Millisecond)
	}
	require.Error(t, err)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "write", oe.Op)
	require.True(t, errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET), "err = %v", err)
}

// TestConnNoAllocs: a read and a write allocate nothing (the callbacks are
// made once per conn).
func TestConnNoAllocs(t *testing.T) {
	c, s := pair(t)
	msg, buf := []byte("ping"), make([]byte, 16)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAtLeast(c, buf, len(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAtLeast(s, buf, len(msg)); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}

// TestWrapOther: anything but a *net.TCPConn is returned as it is.
func TestWrapOther(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	require.Equal(t, a, Wrap(a))
}
