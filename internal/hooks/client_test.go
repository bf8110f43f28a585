package hooks

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

func TestAHookRunsWithItsManagerAndClosesIt(t *testing.T) {
	f := newFake(t)
	closed := 0
	dial := func(context.Context) (Manager, func(), error) { return f, func() { closed++ }, nil }
	var got Manager
	err := Within(context.Background(), time.Hour, dial, func(_ context.Context, m Manager) error {
		got = m
		assert.Zero(t, closed, "the manager is open while the hook runs")
		return errors.New("the hook's own error")
	})
	assert.EqualError(t, err, "the hook's own error")
	assert.Same(t, f, got)
	assert.Equal(t, 1, closed, "the manager is closed once the hook is done")
}

func TestAHookThatCannotReachItsManagerRunsNothing(t *testing.T) {
	dial := func(context.Context) (Manager, func(), error) { return nil, nil, errors.New("no manager") }
	err := Within(context.Background(), time.Hour, dial, func(context.Context, Manager) error {
		t.Fatal("the hook ran without a manager")
		return nil
	})
	assert.EqualError(t, err, "no manager")
}

func TestAHookGivesUpAtItsTimeout(t *testing.T) {
	f := newFake(t)
	dial := func(ctx context.Context) (Manager, func(), error) {
		_, ok := ctx.Deadline()
		assert.True(t, ok, "reaching the manager counts against the timeout")
		return f, func() {}, nil
	}
	err := Within(context.Background(), time.Nanosecond, dial, func(ctx context.Context, _ Manager) error {
		<-ctx.Done() // a hook that waits for an answer that never comes
		return ctx.Err()
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestAReloadSaysWhatItSwappedOrWhatWaits(t *testing.T) {
	assert.Equal(t, "virtiofsd@vm1.service: virtiofsd swapped under the VM: pid 10 -> 20, pause 3.5 ms, state 4096 bytes",
		ReloadSummary("vm1", &state.ReloadAnswer{OldPID: 10, NewPID: 20, PauseMillis: 3.45, StateBytes: 4096}))
	assert.Equal(t, "virtiofsd@vm1.service: no VM connected: virtiofsd pid 10 -> 20 waits for it",
		ReloadSummary("vm1", &state.ReloadAnswer{OldPID: 10, NewPID: 20}))
}

func TestDialSaysWhichManagerItCouldNotReach(t *testing.T) {
	dir := t.TempDir() // no user manager's bus in it
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(dir, "bus"))
	h := Hook{Instance: inst, Scope: config.User}
	m, done, err := h.Dial(context.Background())
	var ue *sdbus.UnreachableError
	require.ErrorAs(t, err, &ue)
	assert.Nil(t, m)
	assert.Nil(t, done)
}
