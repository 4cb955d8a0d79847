//go:build !linux

package forwarding

import "errors"

// parkPoller is Linux-only; elsewhere an IdleParker never parks.
type parkPoller struct{}

func (parkPoller) open(*IdleParker) error { return nil }
func (parkPoller) ok() bool               { return false }
func (parkPoller) close() error           { return nil }
func (parkPoller) arm(*pipeDir) error     { return errors.ErrUnsupported }
