// Package hooks is what the instance's units run around the service:
// release (the socket's stop), resume (the service's end), standby (a
// STANDBY=yes socket's start) and reload (the service's ExecReload=). They talk to systemd through Manager, and
// read the shim's answers in its typed state (package state): the shim
// alone decides what its session does.
package hooks

import (
	"context"
	"fmt"
	"os"
	"syscall"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
)

// Manager is what the hooks ask of the service manager: a seam, so that the
// protocol is tested against a fake whose answers a test orders.
type Manager interface {
	// ActiveState is the unit's ActiveState (active, inactive, failed, ...).
	ActiveState(ctx context.Context, unit string) (string, error)
	// MainPID is a service's main process (the shim), 0 when none runs.
	MainPID(ctx context.Context, unit string) (int, error)
	// UnitFileState is the unit's enablement (enabled, enabled-runtime,
	// disabled, masked, ...).
	UnitFileState(ctx context.Context, unit string) (string, error)
	// JobType is the type of the unit's queued job ("" for none).
	JobType(ctx context.Context, unit string) (string, error)
	// KillMain sends sig to the unit's main process.
	KillMain(ctx context.Context, unit string, sig syscall.Signal) error
	// Start and Stop queue the unit's start or stop (mode replace) and do
	// not wait for it.
	Start(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
}

// Hook names the instance a hook runs for.
type Hook struct {
	Instance string
	Scope    config.Scope
	// Env reads the environment (XDG_RUNTIME_DIR); nil is os.Getenv.
	Env config.Env
	// AfterMarker, when set, runs between Release's writing of the
	// deferred-restart marker and its second look: a test's seam.
	AfterMarker func()
}

func (h Hook) service() string { return "virtiofsd@" + h.Instance + ".service" }
func (h Hook) socket() string  { return "virtiofsd@" + h.Instance + ".socket" }

// Connect reaches the scope's service manager over its private socket, else
// its bus, as list does (sdbus.Connect).
func Connect(ctx context.Context, scope config.Scope) (*DBus, error) {
	b, err := sdbus.Connect(ctx, scope, os.Getenv)
	if err != nil {
		return nil, err
	}
	return &DBus{bus: b}, nil
}

// DBus is Manager over systemd's D-Bus API.
type DBus struct{ bus *sdbus.Conn }

// Close closes the connection.
func (d *DBus) Close() error { return d.bus.Close() }

func (d *DBus) conn() *sddbus.Conn { return d.bus.Manager() }

// ActiveState implements Manager.
func (d *DBus) ActiveState(ctx context.Context, unit string) (string, error) {
	a, err := d.conn().GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("read %s's state: %w", unit, err)
	}
	s, _ := a.Value.Value().(string)
	return s, nil
}

// MainPID implements Manager.
func (d *DBus) MainPID(ctx context.Context, unit string) (int, error) {
	p, err := d.conn().GetUnitTypePropertyContext(ctx, unit, "Service", "MainPID")
	if err != nil {
		return 0, fmt.Errorf("read %s's main pid: %w", unit, err)
	}
	v, _ := p.Value.Value().(uint32)
	return int(v), nil
}

// UnitFileState implements Manager.
func (d *DBus) UnitFileState(ctx context.Context, unit string) (string, error) {
	p, err := d.conn().GetUnitPropertyContext(ctx, unit, "UnitFileState")
	if err != nil {
		return "", fmt.Errorf("read %s's enablement: %w", unit, err)
	}
	v, _ := p.Value.Value().(string)
	return v, nil
}

// JobType implements Manager.
func (d *DBus) JobType(ctx context.Context, unit string) (string, error) {
	jobs, err := d.conn().ListJobsContext(ctx)
	if err != nil {
		return "", fmt.Errorf("list jobs: %w", err)
	}
	for _, j := range jobs {
		if j.Unit == unit {
			return j.JobType, nil
		}
	}
	return "", nil
}

// KillMain implements Manager.
func (d *DBus) KillMain(ctx context.Context, unit string, sig syscall.Signal) error {
	return d.conn().KillUnitWithTarget(ctx, unit, sddbus.Main, int32(sig))
}

// Start implements Manager.
func (d *DBus) Start(ctx context.Context, unit string) error {
	_, err := d.conn().StartUnitContext(ctx, unit, "replace", nil)
	return err
}

// Stop implements Manager.
func (d *DBus) Stop(ctx context.Context, unit string) error {
	_, err := d.conn().StopUnitContext(ctx, unit, "replace", nil)
	return err
}
