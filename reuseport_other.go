//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package smartproxy

import "errors"

// reusePortSupported: no SO_REUSEPORT here; Options.validateReusePort
// refuses the option at New.
const reusePortSupported = false

func setReusePort(uintptr) error { return errors.ErrUnsupported }
