package smartproxy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Size caps for the files the proxy reads. A certificate chain, key or CA
// bundle is a few kilobytes (the whole Mozilla root bundle is ~220 KiB);
// a config file with thousands of routes stays well under a few MiB. The
// caps exist so that a path pointing at /dev/zero, a FIFO or a runaway
// log file fails at once with a clear error instead of hanging -check and
// start, or eating all memory.
const (
	maxPEMFileBytes    = 1 << 20  // certFile, keyFile, caFile
	maxConfigFileBytes = 16 << 20 // the file LoadConfig reads
)

// readLimitedFile reads the regular file at path, refusing anything else
// (devices, FIFOs, sockets, directories) and files over limit bytes. field
// names the setting the path came from ("certFile", "config file"), so the
// error says which setting to fix; errors from the file system are wrapped.
func readLimitedFile(field, path string, limit int64) ([]byte, error) {
	// Stat first: opening a FIFO for reading blocks until a writer shows
	// up, which is the hang this function exists to prevent.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileErr(field, path, err)
	}
	if err := checkRegular(field, path, fi, limit); err != nil {
		return nil, err
	}
	// O_NONBLOCK keeps the open itself from blocking should the path be
	// swapped for a FIFO between the Stat and the open; the Stat of the
	// open file below then refuses it. It has no effect on regular files.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fileErr(field, path, err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fileErr(field, path, err)
	}
	if err := checkRegular(field, path, fi, limit); err != nil {
		return nil, err
	}
	// The size can still grow while we read (a file being written): the
	// limited reader bounds what is read whatever Stat said.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fileErr(field, path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s %q: larger than %s", field, path, byteSize(limit))
	}
	return data, nil
}

// fileErr says which setting and path failed; a *fs.PathError is
// unwrapped to its cause so the path is not repeated, and errors.Is still
// sees the cause (fs.ErrNotExist, fs.ErrPermission).
func fileErr(field, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s %q: %w", field, path, err)
}

func checkRegular(field, path string, fi os.FileInfo, limit int64) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %q: not a regular file (%s)", field, path, fileKind(fi.Mode()))
	}
	if fi.Size() > limit {
		return fmt.Errorf("%s %q: %d bytes, larger than %s", field, path, fi.Size(), byteSize(limit))
	}
	return nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a device"
	default:
		return "type " + m.Type().String()
	}
}

func byteSize(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
