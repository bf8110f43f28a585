// Package handover moves a running session from one shim to the next across
// `systemctl restart`: it tells a restart from a stop by systemd's job for
// the unit, and keeps the front's checkpoint in systemd's file descriptor
// store (FileDescriptorStoreMax=, FDSTORE=1) until the next shim takes it.
package handover

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
)

// Store is systemd's file descriptor store, as fdstore.Notifier sends to
// it; the front keeps its crash record there too.
type Store = front.Store

// Jobs tells what systemd is doing with a unit, as sdbus.Conn does.
type Jobs interface {
	QueuedJobType(ctx context.Context, unit string) (string, error)
}

// IsRestart says whether the SIGTERM the shim got is a restart of unit:
// systemd's job for it is "restart" (systemctl restart, try-restart,
// reload-or-restart of an active unit). Anything else, a stop included,
// is not; nor is a unit systemd cannot be asked about (err says why), so
// that the VM then sees the session end as it did before.
func IsRestart(ctx context.Context, jobs Jobs, unit string) (bool, error) {
	if unit == "" {
		return false, errors.New("tell a restart from a stop: the shim's unit is unknown (not run by systemd?)")
	}
	t, err := jobs.QueuedJobType(ctx, unit)
	if err != nil {
		return false, fmt.Errorf("tell a restart of %s from a stop: %w", unit, err)
	}
	return t == "restart", nil
}

// ErrNoStore is returned by Save when the shim does not run under systemd:
// there is no store to keep the session in.
var ErrNoStore = front.ErrNoStore

// Save sends the checkpoint's descriptors to the store, each under its own
// name after dropping whatever that name held, the setup record last. The
// caller still owns cp and closes it (systemd keeps its own copies). A
// store that refuses some descriptors (FileDescriptorStoreMax= too small)
// does not say so: the next shim finds the checkpoint partial and says so.
func Save(st Store, cp *front.Checkpoint) error {
	for _, nf := range cp.Named() {
		if _, err := st.Remove(nf.Name); err != nil {
			return fmt.Errorf("keep the session in systemd's fd store: %w", err)
		}
		ok, err := st.Store(nf.Name, nf.File)
		if err != nil {
			return fmt.Errorf("keep the session in systemd's fd store: %w", err)
		}
		if !ok {
			return fmt.Errorf("keep the session in systemd's fd store: %w", ErrNoStore)
		}
	}
	return nil
}

// Take finds a checkpoint among the descriptors systemd passed back from
// its store (activation.Socket.Stored) and drops every checkpoint name from
// the store, whether the checkpoint is usable or not: from now on this
// shim's copies are the only ones, so the VM sees its connection end when
// the session ends. It returns (nil, nil) when there is no checkpoint, and
// (nil, err) when the checkpoint is broken or partial (its descriptors
// closed). A checkpoint that loaded comes back even if dropping a name
// failed (err says which; systemd then holds copies until the unit stops).
// The descriptors that are no checkpoint's are left as they are.
func Take(st Store, stored []*os.File) (*front.Checkpoint, error) {
	byName := fdstore.ByName(stored)
	cp, err := front.LoadCheckpoint(byName)
	errs := []error{err}
	for name := range byName {
		if !front.IsCheckpointName(name) {
			continue
		}
		if _, rerr := st.Remove(name); rerr != nil {
			errs = append(errs, fmt.Errorf("drop %s from systemd's fd store: %w", name, rerr))
		}
	}
	return cp, errors.Join(errs...)
}
