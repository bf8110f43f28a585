package systemtest

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// storeEnv, set to a report file, makes the test binary a Type=notify
// service that uses systemd's file descriptor store through package
// fdstore (see storeHelper).
const storeEnv = "SYSTEMTEST_FDSTORE"

// storeHelper appends to report what the store gave back at this start
// ("none", or the content of each memfd named generation), then stores a
// memfd of its own under that name in place of the old one, says READY=1
// and runs until SIGTERM.
func storeHelper(report string) error {
	stored := fdstore.ByName(activation.Files(true))
	got := []string{}
	for _, f := range stored["generation"] {
		b := make([]byte, 64)
		n, _ := f.ReadAt(b, 0)
		got = append(got, string(b[:n]))
		f.Close()
	}
	if len(got) == 0 {
		got = append(got, "none")
	}
	if err := appendLine(report, strings.Join(got, ",")); err != nil {
		return err
	}
	fd, err := unix.MemfdCreate("generation", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	mem := os.NewFile(uintptr(fd), "generation")
	if _, err := fmt.Fprintf(mem, "generation of pid %d", os.Getpid()); err != nil {
		return err
	}
	n := fdstore.FromEnv(os.Getenv)
	if _, err := n.Remove("generation"); err != nil {
		return err
	}
	if sent, err := n.Store("generation", mem); err != nil || !sent {
		return fmt.Errorf("store: sent %v, %w", sent, err)
	}
	mem.Close()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return nil
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// storeBox is a box on one leg whose unit runs this test binary as a
// Type=notify service with FileDescriptorStoreMax=8, its helper chosen by
// env=dir (a folder under /var/tmp, which the box sees at the same path on
// every leg, holding the helper's copy and its report).
type storeBox struct {
	dir, unit string
	systemctl func(args ...string) string
}

func newStoreBox(t *testing.T, leg shimbox.Platform, name, unit, env string, value func(dir string) string, extra ...string) *storeBox {
	t.Helper()
	sdbox.RequireRoot(t)
	ctx := context.Background()
	tree, err := leg.Tree(ctx)
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("/var/tmp", "st-"+name+"-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, err := os.ReadFile(self)
	require.NoError(t, err)
	helper := filepath.Join(dir, "helper")
	require.NoError(t, os.WriteFile(helper, bin, 0o755))

	o := sdbox.Options{Name: name, Units: map[string]string{unit: fmt.Sprintf(`[Service]
Type=notify
Environment=%s=%s
ExecStart=%s
FileDescriptorStoreMax=8
%s`, env, value(dir), helper, strings.Join(extra, ""))}}
	if tree != nil {
		o.Root = tree.Root
		o.Binds = map[string]string{"/var/tmp": "/var/tmp"}
	}
	b := sdbox.New(t, o)
	return &storeBox{dir: dir, unit: unit, systemctl: func(args ...string) string {
		t.Helper()
		out, err := b.Run(ctx, "systemctl", args...)
		require.NoError(t, err, "systemctl %s: %s", strings.Join(args, " "), out)
		return strings.TrimSpace(out)
	}}
}

// lines is the helper's report, a line per entry.
func (s *storeBox) lines(t *testing.T) []string {
	t.Helper()
	out, err := os.ReadFile(filepath.Join(s.dir, "report"))
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// show is one property of the unit, as PROP=VALUE.
func (s *storeBox) show(prop string) string { return s.systemctl("show", "-p", prop, s.unit) }

// TestFDStoreKeepsANamedMemfdAcrossRestartButNotStop runs, on each leg, a
// Type=notify service (this test binary) that stores a memfd with package
// fdstore: systemctl restart hands it back by name, systemctl stop empties
// the store.
func TestFDStoreKeepsANamedMemfdAcrossRestartButNotStop(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		const unit = "fdstore-helper.service"
		b := newStoreBox(t, leg, "fdstore", unit, storeEnv, func(dir string) string { return filepath.Join(dir, "report") })
		pid := func() string { return strings.TrimPrefix(b.show("MainPID"), "MainPID=") }

		b.systemctl("start", unit)
		first := pid()
		assert.Equal(t, []string{"none"}, b.lines(t), "the first start finds an empty store")
		assert.Equal(t, "NFileDescriptorStore=1", b.show("NFileDescriptorStore"))

		b.systemctl("restart", unit)
		assert.Equal(t, []string{"none", "generation of pid " + first}, b.lines(t), "restart hands the memfd back by name")
		assert.Equal(t, "NFileDescriptorStore=1", b.show("NFileDescriptorStore"), "FDSTOREREMOVE dropped the old one")

		b.systemctl("stop", unit)
		b.systemctl("start", unit)
		assert.Equal(t, []string{"none", "generation of pid " + first, "none"}, b.lines(t), "stop empties the store")
		b.systemctl("stop", unit)
	})
}
