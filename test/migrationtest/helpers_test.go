package migrationtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/migration"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
)

// unit is the instance's service on both hosts.
const unit = "virtiofsd@" + migration.Instance + ".service"

// endTimeout bounds how long a session takes to end once its QEMU is gone.
const endTimeout = 60 * time.Second

// hosts boots the Debian 13 pair, writes the same config on both (SHARED_DIR
// a share both see, plus extra lines), applies it (daemon-reload) and
// enables the instance's socket on both. It returns the pair and the share.
func hosts(t *testing.T, extra ...string) (*shimbox.Pair, string) {
	t.Helper()
	p := shimbox.NewPair(t, shimbox.Options{Name: "mig", Platform: shimbox.Debian13})
	share, err := p.Share("share")
	require.NoError(t, err)
	conf := "SHARED_DIR=" + share + "\n" + strings.Join(extra, "\n") + "\n"
	require.NoError(t, p.Configure(migration.Instance, conf))
	ctx := context.Background()
	for _, b := range p.Boxes() {
		out, err := b.Systemctl(ctx, "daemon-reload")
		require.NoError(t, err, out)
		out, err = b.Systemctl(ctx, "enable", "--now", "virtiofsd@"+migration.Instance+".socket")
		require.NoError(t, err, out)
	}
	return p, share
}

// image is the test guest, built once per machine.
func image(t *testing.T) *guest.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err, "prepare the guest image")
	return img
}

// boot boots the guest on the source host and waits until its script holds
// its files open (UpFile); the guest is killed, if still running, when the
// test ends.
func boot(t *testing.T, p *shimbox.Pair, share string, deleted bool) *migration.VM {
	t.Helper()
	vm, err := migration.Boot(context.Background(), p, image(t), migration.Script(deleted))
	require.NoError(t, err)
	t.Cleanup(vm.Close)
	if !assert.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := os.Stat(filepath.Join(share, migration.UpFile))
		assert.NoError(c, err)
	}, 3*time.Minute, 200*time.Millisecond) {
		t.Fatalf("the guest has not opened its files; console:\n%s\nthe source host's %s:\n%s", vm.Src.Serial(), unit, journalText(t, p.Src))
	}
	return vm
}

// ended waits for the instance's session on b to end and returns the
// service's ActiveState, Result and ExecMainStatus.
func ended(t *testing.T, b *shimbox.Box) map[string]string {
	t.Helper()
	var last map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		last, err = unitprop.Show(context.Background(), b, unit, "ActiveState", "Result", "ExecMainStatus", "StatusText")
		if !assert.NoError(c, err) {
			return
		}
		assert.Contains(c, []string{"inactive", "failed"}, last["ActiveState"], "%s still running: %v", unit, last)
	}, endTimeout, 200*time.Millisecond)
	return last
}

// requireEndedCleanly waits for the session on b to end and requires that
// it ended as a clean session does: inactive, Result=success.
func requireEndedCleanly(t *testing.T, b *shimbox.Box, host string) {
	t.Helper()
	st := ended(t, b)
	assert.Equal(t, "inactive", st["ActiveState"], "%s host: %v\n%s", host, st, journalText(t, b))
	assert.Equal(t, "success", st["Result"], "%s host: %v", host, st)
}

// journal returns the MESSAGEs of the instance's service on b.
func journal(t *testing.T, b *shimbox.Box) []string {
	t.Helper()
	entries, err := b.Journal(context.Background(), "-u", unit)
	require.NoError(t, err)
	return shimbox.Messages(entries)
}

func journalText(t *testing.T, b *shimbox.Box) string {
	return strings.Join(journal(t, b), "\n")
}

// heldLines reads the file the guest held open, as the host sees it.
func heldLines(t *testing.T, share string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(share, migration.HeldFile))
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// requireWritesKept checks the held file on the host: "before 1" to
// "before N" in order, then "after", as many lines as the guest read back
// through its old descriptor.
func requireWritesKept(t *testing.T, share string, res *guest.Result) {
	t.Helper()
	lines := heldLines(t, share)
	require.GreaterOrEqual(t, len(lines), 2, lines)
	for i, l := range lines[:len(lines)-1] {
		require.Equal(t, "before "+strconv.Itoa(i+1), l, "line %d of %s", i+1, migration.HeldFile)
	}
	assert.Equal(t, "after", lines[len(lines)-1])
	assert.Equal(t, strconv.Itoa(len(lines)), strings.TrimSpace(res.Values["lines"]), "the guest read back what the host sees")
	assert.Equal(t, "before 1", res.Values["first"])
	assert.Equal(t, "after", res.Values["last"], "read through the descriptor opened before the migration")
	got, err := os.ReadFile(filepath.Join(share, migration.NewFile))
	require.NoError(t, err)
	assert.Equal(t, "written after the migration\n", string(got))
}
