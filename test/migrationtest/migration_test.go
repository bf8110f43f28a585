package migrationtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

			info, err := vm.Migrate(ctx, Options{})
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
			require.NoError(t, vm.Signal(share, MigratedFile))
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

	info, err := vm.Migrate(ctx, Options{ReturnPath: true})
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
	require.NoError(t, vm.Signal(share, MigratedFile))
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

	info, err := vm.Migrate(ctx, Options{})
	require.NoError(t, err)
	assert.Equal(t, "completed", info.Status, "the source cannot tell: %+v", info)
	st := ended(t, p.Dst)
	assert.Equal(t, "76", st["ExecMainStatus"], "the destination's session failed: %v\n%s", st, journalText(t, p.Dst))
	status, err := vm.Src.QMP().Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "postmigrate", status, "the guest stays paused on the source")

	require.NoError(t, vm.Src.QMP().Execute(ctx, "cont", nil, nil))
	require.NoError(t, vm.Signal(share, MigratedFile))
	res, err := vm.Wait(false)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	requireWritesKept(t, share, res)
	requireEndedCleanly(t, p.Src, "source")
}

// TestGuestErrorFailsOnlyTheDeletedFile: with MIGRATION_ON_ERROR=guest-error
// the same migration completes; only the file that could not be migrated
// fails in the guest, the held one goes on working, and both sessions end
// cleanly.
func TestGuestErrorFailsOnlyTheDeletedFile(t *testing.T) {
	p, share := hosts(t, "MIGRATION_ON_ERROR=guest-error")
	vm := boot(t, p, share, true)
	ctx := context.Background()

	info, err := vm.Migrate(ctx, Options{ReturnPath: true})
	require.NoError(t, err)
	require.Equal(t, "completed", info.Status, "%+v\ndestination:\n%s", info, journalText(t, p.Dst))
	require.NoError(t, vm.QuitSource(ctx))
	requireEndedCleanly(t, p.Src, "source")
	require.NoError(t, vm.Signal(share, MigratedFile))
	res, err := vm.Wait(true)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "failed", res.Values["gone"], "the deleted file fails in the guest")
	requireWritesKept(t, share, res)
	requireEndedCleanly(t, p.Dst, "destination")
}

// TestFileHandlesMigrateADeletedOpenFile: what find-paths cannot migrate,
// file-handles does (the destination opens the file by its handle, with
// the CAP_DAC_READ_SEARCH the generator grants): the migration completes
// and the guest goes on writing to the file it deleted.
func TestFileHandlesMigrateADeletedOpenFile(t *testing.T) {
	p, share := hosts(t, "MIGRATION_MODE=file-handles")
	vm := boot(t, p, share, true)
	ctx := context.Background()

	info, err := vm.Migrate(ctx, Options{ReturnPath: true})
	require.NoError(t, err)
	require.Equal(t, "completed", info.Status, "%+v\ndestination:\n%s", info, journalText(t, p.Dst))
	require.NoError(t, vm.QuitSource(ctx))
	requireEndedCleanly(t, p.Src, "source")
	require.NoError(t, vm.Signal(share, MigratedFile))
	res, err := vm.Wait(true)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "ok", res.Values["gone"], "the deleted file still works on the destination")
	requireWritesKept(t, share, res)
	requireEndedCleanly(t, p.Dst, "destination")
}

// TestStandbyDestination: with STANDBY=yes a virtiofsd already waits on the
// destination before its QEMU connects; the destination's QEMU gets that
// virtiofsd, the migration completes, and once the guest powers off the
// instance is back to a standby for the next session.
func TestStandbyDestination(t *testing.T) {
	p, share := hosts(t, "STANDBY=yes")
	var standby string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		out, err := p.Dst.Systemctl(context.Background(), "show", "-p", "StatusText", "--value", unit)
		assert.NoError(c, err)
		standby = strings.TrimSpace(out)
		assert.Contains(c, standby, "standby for session 1", "the destination waits before any VM")
	}, endTimeout, 200*time.Millisecond)
	pid := statusPID(standby)
	require.NotEmpty(t, pid, standby)

	vm := boot(t, p, share, false)
	ctx := context.Background()
	info, err := vm.Migrate(ctx, Options{})
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
	require.NoError(t, vm.Signal(share, MigratedFile))
	res, err := vm.Wait(true)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	requireWritesKept(t, share, res)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st := map[string]string{}
		out, err := p.Dst.Systemctl(ctx, "show", "-p", "ActiveState,StatusText", unit)
		assert.NoError(c, err)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(line, "=")
			st[k] = v
		}
		assert.Equal(c, "active", st["ActiveState"])
		assert.Contains(c, st["StatusText"], "standby for session 2", "the next standby waits")
	}, endTimeout, 200*time.Millisecond)
	assert.NotContains(t, journalText(t, p.Dst), "Migration failed")
}

// statusPID is the virtiofsd pid a status line names: "(virtiofsd pid 812, ...".
func statusPID(status string) string {
	_, rest, ok := strings.Cut(status, "virtiofsd pid ")
	if !ok {
		return ""
	}
	pid, _, _ := strings.Cut(rest, ",")
	return strings.TrimSuffix(pid, ")")
}
