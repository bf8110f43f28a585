package shimbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// State reads the typed state an instance's shim last published, through
// the product's own parser: nil when there is none.
func (b *Box) State(instance string) (*state.State, error) {
	return state.Read(b.Path(state.Path(RuntimeDir(), instance)))
}

// LiveState is the state of the instance's running shim (the service's
// MainPID): nil when no shim runs, or it has published nothing yet.
func (b *Box) LiveState(ctx context.Context, instance string) (*state.State, error) {
	return liveState(ctx, b.Systemctl, "virtiofsd@"+instance+".service", func() (*state.State, error) { return b.State(instance) })
}

// Deferred reads an instance's deferred-restart marker: nil when no
// restart of its socket waits.
func (b *Box) Deferred(instance string) (*state.Deferral, error) {
	return state.ReadMarker(b.Path(state.MarkerPath(RuntimeDir(), instance)))
}

// State reads the typed state of one of the user's instances: nil when
// there is none.
func (u *User) State(instance string) (*state.State, error) {
	return state.Read(u.Box.Path(state.Path(u.RuntimeDir(), instance)))
}

// LiveState is the state of the user instance's running shim: nil when no
// shim runs, or it has published nothing yet.
func (u *User) LiveState(ctx context.Context, instance string) (*state.State, error) {
	return liveState(ctx, u.Systemctl, "virtiofsd@"+instance+".service", func() (*state.State, error) { return u.State(instance) })
}

func liveState(ctx context.Context, systemctl func(context.Context, ...string) (string, error), unit string, read func() (*state.State, error)) (*state.State, error) {
	out, err := systemctl(ctx, "show", "-p", "MainPID", "--value", unit)
	if err != nil {
		return nil, fmt.Errorf("systemctl show %s: %w: %s", unit, err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return nil, fmt.Errorf("%s's MainPID: %w", unit, err)
	}
	st, err := read()
	if err != nil || !st.Live(pid) {
		return nil, err
	}
	return st, nil
}
