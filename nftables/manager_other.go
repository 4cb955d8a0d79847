//go:build !linux

package nftables

import (
	"context"
	"fmt"
	"runtime"
)

// Manager is unavailable off Linux: New returns ErrUnavailable.
type Manager struct{}

func unsupported() error {
	return fmt.Errorf("%w: nftables is Linux only (this is %s)", ErrUnavailable, runtime.GOOS)
}

// New returns ErrUnavailable off Linux.
func New(Config) (*Manager, error) { return nil, unsupported() }

// Probe returns ErrUnavailable off Linux.
func Probe() error { return unsupported() }

// TableName returns "".
func (m *Manager) TableName() string { return "" }

// Start returns ErrUnavailable.
func (m *Manager) Start(context.Context, []Route) error { return unsupported() }

// UpdateRoutes returns ErrUnavailable.
func (m *Manager) UpdateRoutes(context.Context, []Route) error { return unsupported() }

// Stop does nothing.
func (m *Manager) Stop(context.Context) error { return nil }

// Status returns the zero Status.
func (m *Manager) Status(context.Context) (Status, error) { return Status{}, nil }
