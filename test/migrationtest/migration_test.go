package migrationtest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/migration"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestGuestKeepsItsOpenFileAcrossMigration migrates a guest that holds a
// file open on its share and keeps appending to it, with each migration
// mode: the migration completes, the guest goes on writing through the same
// descriptor on the destination and reads the whole file back through the
// descriptor it opened before; the host sees every write, and both hosts'
// sessions end cleanly once the source's QEMU quits and the guest powers
// off. file-handles needs MIGRATION_MODE (and the generator's
// CAP_DAC_READ_SEARCH for it).
func TestGuestKeepsItsOpenFileAcrossMigration(t *testing.T) {
	for _, tc := range []struct {
		name string
		conf []string
	}{
		{"find-paths", nil}, // the default
		{"file-handles", []string{"MIGRATION_MODE=file-handles"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, share := hosts(t, tc.conf...)
			vm := boot(t, p, share, false)
			ctx := context.Background()

			info, err := vm.Migrate(ctx, migration.Options{})
			require.NoError(t, err)
			require.Equal(t, "completed", info.Status, "%+v\ndestination:\n%s", info, journalText(t, p.Dst))
			t.Logf("%s: migration took %d ms, downtime %d ms", tc.name, info.TotalTime, info.Downtime)
			st, err := vm.Src.QMP().Status(ctx)
			require.NoError(t, err)
			assert.Equal(t, "postmigrate", st, "the source's QEMU")
			st, err = vm.Dst.QMP().Status(ctx)
			require.NoError(t, err, "destination QEMU:\n%s\nconsole:\n%s", vm.Dst.Stderr(), vm.Dst.Serial())
			assert.Equal(t, "running", st, "the destination's QEMU")

			require.NoError(t, vm.QuitSource(ctx))
			requireEndedCleanly(t, p.Src, "source")
			reloadArrivedVM(t, p.Dst)
			require.NoError(t, vm.Signal(share, migration.MigratedFile))
			res, err := vm.Wait(true)
			require.NoError(t, err)
			require.Equal(t, 0, res.ExitStatus, res.Serial)
			assert.Equal(t, "yes", res.Values["done"])
			requireWritesKept(t, share, res)
			requireEndedCleanly(t, p.Dst, "destination")
			assert.NotContains(t, journalText(t, p.Dst), "Migration failed")
		})
	}
}

// reloadArrivedVM reloads the instance on dst, whose VM came in by a live
// migration through the front, while the guest goes on appending to its held
// file: the session is movable and the reload swaps virtiofsd under it
// (requireWritesKept then checks every line the guest wrote, through the
// descriptor it opened before the migration and the reload).
func reloadArrivedVM(t *testing.T, dst *shimbox.Box) {
	t.Helper()
	ctx := context.Background()
	st, err := dst.LiveState(ctx, migration.Instance)
	require.NoError(t, err)
	require.NotNil(t, st, "the destination's shim has published no state")
	require.True(t, st.Front, "the destination's session runs through the front")
	require.True(t, st.Movable, "a VM that came in by a migration can be moved: %s", st.UnmovableReason)
	out, err := dst.Systemctl(ctx, "reload", unit)
	require.NoError(t, err, "%s\n%s", out, journalText(t, dst))
	st, err = dst.LiveState(ctx, migration.Instance)
	require.NoError(t, err)
	assert.Equal(t, 1, st.Handovers, "one swap under the arrived VM")
}

// TestDeletedOpenFileFailsMigrationByDefault: find-paths cannot migrate a
// file the guest holds open but has deleted. With the default
// MIGRATION_ON_ERROR=abort the destination's virtiofsd refuses the state
// (its journal says which inode and why), its QEMU gives up, and the
// destination's session ends failed; with QEMU's return-path capability the
// source learns of it and resumes the guest, which runs on as if nothing
// happened.
func TestDeletedOpenFileFailsMigrationByDefault(t *testing.T) {
	p, share := hosts(t)
	vm := boot(t, p, share, true)
	ctx := context.Background()

	info, err := vm.Migrate(ctx, migration.Options{ReturnPath: true})
	require.NoError(t, err)
	assert.Equal(t, "failed", info.Status, "%+v", info)

	// The destination: its QEMU exits, and its session says why it failed.
	select {
	case <-vm.Dst.Done():
	case <-time.After(endTimeout):
		t.Fatalf("the destination's QEMU still runs after the failed migration:\n%s", vm.Dst.Stderr())
	}
	_, err = vm.Dst.Wait()
	require.Error(t, err, "the destination's QEMU fails to load the state")
	assert.Contains(t, vm.Dst.Stderr(), "load of migration failed")
	st := ended(t, p.Dst)
	msgs := journalText(t, p.Dst)
	assert.Contains(t, msgs, "Migration failed")
	assert.Contains(t, msgs, "Migration source has lost inode")
	assert.Equal(t, "failed", st["ActiveState"], "a failed migration fails the destination's session: %v\n%s", st, msgs)
	assert.Equal(t, "exit-code", st["Result"], "%v", st)
	assert.Equal(t, "76", st["ExecMainStatus"], "exit status 76: a live migration failed (%v)", st)

	// The source runs on: the guest finishes its script there.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, err := vm.Src.QMP().Status(ctx)
		assert.NoError(c, err)
		assert.Equal(c, "running", st, "return-path: the source resumes")
	}, 30*time.Second, 200*time.Millisecond)
	require.NoError(t, vm.Signal(share, migration.MigratedFile))
	res, err := vm.Wait(false)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "ok", res.Values["gone"], "the deleted file still works on the source")
	requireWritesKept(t, share, res)
	requireEndedCleanly(t, p.Src, "source")
}

// TestWithoutReturnPathTheSourceStaysPaused: the same failed migration
// without QEMU's return-path capability. The destination fails as before,
// but the source never hears of it: it says "completed" and keeps the guest
// paused (postmigrate) until someone resumes it (QMP cont), after which the
// guest runs on.
func TestWithoutReturnPathTheSourceStaysPaused(t *testing.T) {
	p, share := hosts(t)
	vm := boot(t, p, share, true)
	ctx := context.Background()

	info, err := vm.Migrate(ctx, migration.Options{})
	require.NoError(t, err)
	assert.Equal(t, "completed", info.Status, "the source cannot tell: %+v", info)
	st := ended(t, p.Dst)
	assert.Equal(t, "76", st["ExecMainStatus"], "the destination's session failed: %v\n%s", st, journalText(t, p.Dst))
	status, err := vm.Src.QMP().Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "postmigrate", status, "the guest stays paused on the source")

	require.NoError(t, vm.Src.QMP().Execute(ctx, "cont", nil, nil))
	require.NoError(t, vm.Signal(share, migration.MigratedFile))
	res, err := vm.Wait(false)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	requireWritesKept(t, share, res)
	requireEndedCleanly(t, p.Src, "source")
}

// TestDeletedOpenFileMigratesAsConfigured: the migration that fails by
// default (TestDeletedOpenFileFailsMigrationByDefault) completes with either
// key. With MIGRATION_ON_ERROR=guest-error only the file that could not be
// migrated fails in the guest; with MIGRATION_MODE=file-handles the
// destination opens it by its handle (with the CAP_DAC_READ_SEARCH the
// generator grants), and the guest goes on writing to the file it deleted.
// Either way the held file goes on working, and both sessions end cleanly.
func TestDeletedOpenFileMigratesAsConfigured(t *testing.T) {
	for _, tc := range []struct {
		name, conf, gone string
	}{
		{"guest-error", "MIGRATION_ON_ERROR=guest-error", "failed"},
		{"file-handles", "MIGRATION_MODE=file-handles", "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, share := hosts(t, tc.conf)
			vm := boot(t, p, share, true)
			ctx := context.Background()

			info, err := vm.Migrate(ctx, migration.Options{ReturnPath: true})
			require.NoError(t, err)
			require.Equal(t, "completed", info.Status, "%+v\ndestination:\n%s", info, journalText(t, p.Dst))
			require.NoError(t, vm.QuitSource(ctx))
			requireEndedCleanly(t, p.Src, "source")
			require.NoError(t, vm.Signal(share, migration.MigratedFile))
			res, err := vm.Wait(true)
			require.NoError(t, err)
			require.Equal(t, 0, res.ExitStatus, res.Serial)
			assert.Equal(t, tc.gone, res.Values["gone"], "the deleted file in the guest")
			requireWritesKept(t, share, res)
			requireEndedCleanly(t, p.Dst, "destination")
		})
	}
}

// TestStandbyDestination: with STANDBY=yes a virtiofsd already waits on the
// destination before its QEMU connects; the destination's QEMU gets that
// virtiofsd, the migration completes, and once the guest powers off the
// instance is back to a standby for the next session.
func TestStandbyDestination(t *testing.T) {
	p, share := hosts(t, "STANDBY=yes")
	// The destination waits before any VM: its shim publishes a standby
	// waiting for its first session.
	pid := strconv.Itoa(standbyWaiting(t, p.Dst, 1).VirtiofsdPID)

	vm := boot(t, p, share, false)
	ctx := context.Background()
	info, err := vm.Migrate(ctx, migration.Options{})
	require.NoError(t, err)
	require.Equal(t, "completed", info.Status, "%+v\ndestination:\n%s", info, journalText(t, p.Dst))
	entries, err := p.Dst.Journal(ctx, "-u", unit, "VIRTIOFSD_PID="+pid)
	require.NoError(t, err)
	var connected bool
	for _, e := range entries {
		connected = connected || strings.Contains(e["MESSAGE"], p.Dst.Platform.ConnectedLine())
	}
	assert.True(t, connected, "the standby virtiofsd (pid %s) serves the destination's QEMU", pid)

	require.NoError(t, vm.QuitSource(ctx))
	require.NoError(t, vm.Signal(share, migration.MigratedFile))
	res, err := vm.Wait(true)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	requireWritesKept(t, share, res)
	standbyWaiting(t, p.Dst, 2) // the next standby waits
	assert.NotContains(t, journalText(t, p.Dst), "Migration failed")
}

// standbyWaiting waits until the host's running shim publishes a standby
// virtiofsd waiting for its session-th session, and returns that state.
func standbyWaiting(t *testing.T, host *shimbox.Box, session int) *state.State {
	t.Helper()
	var st *state.State
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := host.LiveState(context.Background(), migration.Instance)
		if assert.NoError(c, err) && assert.NotNil(c, got, "no shim runs") {
			assert.Equal(c, state.Waiting, got.Phase)
			assert.True(c, got.Standby)
			assert.Equal(c, session, got.SessionNumber)
			assert.NotZero(c, got.VirtiofsdPID)
			st = got
		}
	}, endTimeout, 200*time.Millisecond, "no standby waits for session %d", session)
	return st
}
