package hooks

import (
	"context"
	"fmt"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// DefaultTimeout bounds a hook (its --timeout); ReloadTimeout bounds a
// reload, which waits for a new virtiofsd's readiness (under the unit's
// TimeoutStartSec=30s).
const (
	DefaultTimeout = 10 * time.Second
	ReloadTimeout  = 25 * time.Second
)

// Dial reaches the service manager of the hook's instance (Connect): the
// manager and what closes it, as Within and Resume take it.
func (h Hook) Dial(ctx context.Context) (Manager, func(), error) {
	m, err := Connect(ctx, h.Scope)
	if err != nil {
		return nil, nil, err
	}
	return m, func() { _ = m.Close() }, nil
}

// Within runs fn with the manager dial reaches (Hook.Dial in the program),
// all of it within timeout (the hook's --timeout), and closes the manager
// when fn returns.
func Within(ctx context.Context, timeout time.Duration, dial func(context.Context) (Manager, func(), error),
	fn func(ctx context.Context, m Manager) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, done, err := dial(ctx)
	if err != nil {
		return err
	}
	defer done()
	return fn(ctx, m)
}

// ReloadSummary is the sentence that tells what a reload of instance did:
// the swap's figures with a VM connected, else the virtiofsd that waits
// for the VM instead.
func ReloadSummary(instance string, a *state.ReloadAnswer) string {
	if a.PauseMillis > 0 {
		return fmt.Sprintf("virtiofsd@%s.service: virtiofsd swapped under the VM: pid %d -> %d, pause %.1f ms, state %d bytes",
			instance, a.OldPID, a.NewPID, a.PauseMillis, a.StateBytes)
	}
	return fmt.Sprintf("virtiofsd@%s.service: no VM connected: virtiofsd pid %d -> %d waits for it", instance, a.OldPID, a.NewPID)
}
