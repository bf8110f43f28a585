package service

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// invocation is a run of instance vm1 under a systemd whose %t is rt, with
// its config read by load and its own log in the returned buffer.
func invocation(t *testing.T, rt string, load func() (*config.Config, error)) (*Invocation, *bytes.Buffer) {
	t.Helper()
	t.Setenv("NOTIFY_SOCKET", "") // nobody to tell
	route, err := logsink.NewRoute("stderr", "vm1", false, nil, nil)
	require.NoError(t, err)
	var log bytes.Buffer
	l := logsink.NewShimLog(&log)
	env := map[string]string{"RUNTIME_DIRECTORY": state.Dir(rt)}
	_, sigs := WatchSignals(context.Background(), SignalSources{}, nil)
	t.Cleanup(sigs.Stop)
	return &Invocation{Instance: "vm1", Load: load, Route: route, Log: l, Signals: sigs, Stderr: &log,
		Getenv: func(k string) string { return env[k] }}, &log
}

func TestARunThatFailsSaysWhyInTheStateFileWhereSystemdPutsIt(t *testing.T) {
	rt := t.TempDir()
	bad := &config.Error{Msg: "vm1.conf:2: unknown key CACHEMODE"}
	iv, _ := invocation(t, rt, func() (*config.Config, error) { return nil, bad })
	err := iv.Serve(context.Background())
	require.ErrorIs(t, err, bad)

	st, err := state.Read(state.Path(rt, "vm1"))
	require.NoError(t, err)
	require.NotNil(t, st, "the state is in RUNTIME_DIRECTORY, where list and check read it")
	assert.Equal(t, state.Failed, st.Phase)
	assert.Equal(t, &state.Failure{Reason: bad.Error(), ExitCode: exitcode.For(bad)}, st.Failure)
	assert.Equal(t, exitcode.Config, st.Failure.ExitCode)
}

func TestAStopBeforeVirtiofsdStartsEndsTheRunWithoutAnError(t *testing.T) {
	rt := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	iv, log := invocation(t, rt, func() (*config.Config, error) {
		cancel() // the SIGTERM comes while the config is read
		return nil, errors.New("interrupted")
	})
	require.NoError(t, iv.Serve(ctx))
	assert.Contains(t, log.String(), "stopped before virtiofsd was started")
	st, err := state.Read(state.Path(rt, "vm1"))
	require.NoError(t, err)
	assert.Equal(t, state.Ended, st.Phase)
	assert.Nil(t, st.Failure)
}

func TestAShimRunByHandWritesNoStateFile(t *testing.T) {
	rt := t.TempDir()
	iv, _ := invocation(t, rt, func() (*config.Config, error) { return nil, errors.New("no config") })
	iv.Getenv = func(string) string { return "" } // no RUNTIME_DIRECTORY: not under systemd
	require.Error(t, iv.Serve(context.Background()))
	files, err := filepath.Glob(filepath.Join(rt, "*", "*"))
	require.NoError(t, err)
	assert.Empty(t, files)
}

func TestARestartIsKeptInTheStoreOfTheNotifySocket(t *testing.T) {
	h := NewHandover(config.User, "virtiofsd@vm1.service", func(k string) string {
		return map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}[k]
	})
	assert.Equal(t, fdstore.Notifier{Socket: "/run/systemd/notify"}, h.Store)
}

func TestWithoutItsManagerAStopIsNotTakenForARestart(t *testing.T) {
	rt := t.TempDir() // a user's runtime folder with no manager in it
	h := NewHandover(config.User, "virtiofsd@vm1.service", func(k string) string {
		return map[string]string{"XDG_RUNTIME_DIR": rt}[k]
	})
	restart, err := h.IsRestart(context.Background())
	assert.Error(t, err)
	assert.False(t, restart)
}

func TestUnderTheJournalEvenAConfigErrorLeavesStderr(t *testing.T) {
	iv, log := invocation(t, t.TempDir(), func() (*config.Config, error) { return nil, errors.New("no config") })
	route, err := logsink.NewRoute("journal", "vm1", false, nil, func(bool) string { return "virtiofsd@vm1.service" })
	require.NoError(t, err)
	iv.Route = route
	require.Error(t, iv.Serve(context.Background()))
	assert.True(t, iv.Log.Journaled(), "main logs the error to the journal, with the instance's field")
	assert.Empty(t, log.String())
}
