package smartproxy

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
)

// validateReusePort refuses ReusePort where it cannot take effect: on a
// platform without SO_REUSEPORT (a deployment that counts on sharing the
// port must not start as a lone process that merely looks right), and with
// Options.Listen, whose listeners the proxy does not open.
func (o *Options) validateReusePort() error {
	if !o.ReusePort {
		return nil
	}
	if !reusePortSupported {
		return fmt.Errorf("ReusePort: SO_REUSEPORT is not supported on %s", runtime.GOOS)
	}
	if o.Listen != nil {
		return errors.New("ReusePort: has no effect with Options.Listen (set SO_REUSEPORT in the Listen function instead)")
	}
	return nil
}

// withReusePort returns control with SO_REUSEPORT set after it, for
// net.ListenConfig.Control. A failure to set it fails the listen: a
// process that believes it shares a port must not hold it alone.
func withReusePort(control func(network, address string, c syscall.RawConn) error) func(string, string, syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if control != nil {
			if err := control(network, address, c); err != nil {
				return err
			}
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setReusePort(fd) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_REUSEPORT: %w", serr)
		}
		return nil
	}
}
