package migrationtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"libvirt.org/go/libvirtxml"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/libvirt"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/migration"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestVirshMigrateBetweenTwoLibvirtds: libvirt on each host, a domain
// whose <filesystem> is what `virtiofsd-shim check --libvirt` prints, and
// `virsh migrate --live DOMAIN 'qemu+unix:///system?socket=DEST_SOCK'
// --migrateuri unix:///PATH` from the source host. The guest keeps its file
// open and writing across the migration, libvirt quits the source's QEMU
// (the source's session ends cleanly), and the guest finishes its script on
// the destination.
func TestVirshMigrateBetweenTwoLibvirtds(t *testing.T) {
	p := shimbox.NewPair(t, shimbox.Options{Name: "lvmig", Platform: shimbox.Debian13, Overlay: libvirt.Overlays()})
	share, err := p.Share("share")
	require.NoError(t, err)
	// QEMU runs as libvirt-qemu: the share and the migration socket's folder
	// must be its to write.
	require.NoError(t, os.Chmod(share, 0o777))
	migDir, err := p.Share("migrate")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(migDir, 0o777))
	require.NoError(t, p.Configure(migration.Instance, "SHARED_DIR="+share+"\nSOCKET_GROUP=libvirt-qemu\nSOCKET_MODE=0660\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	for _, b := range p.Boxes() {
		out, err := b.Systemctl(ctx, "daemon-reload")
		require.NoError(t, err, out)
		out, err = b.Systemctl(ctx, "enable", "--now", "virtiofsd@"+migration.Instance+".socket")
		require.NoError(t, err, out)
		require.NoError(t, twoHosts(ctx, b))
		_, err = libvirt.StartLibvirt(ctx, b)
		require.NoError(t, err)
	}
	destSock := exposeLibvirt(t, p)

	out, err := p.Src.Run(ctx, shimbox.BinaryPath, "check", "--libvirt", migration.Instance)
	require.NoError(t, err, out)
	snippet, err := domainxml.ParseSnippet(out)
	require.NoError(t, err, out)
	d := libvirt.Domain{
		Name:          "mig1",
		Script:        migration.Script(false),
		Filesystems:   []libvirtxml.DomainFilesystem{snippet.Filesystem},
		MemoryBacking: snippet.MemoryBacking,
	}
	img := image(t)
	src, err := libvirt.Define(ctx, p.Src, img, d)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := src.Remove(context.Background()); err != nil {
			t.Errorf("remove the source's domain: %v", err)
		}
	})
	dst, err := libvirt.Place(p.Dst, img, d) // the same files at the same paths
	require.NoError(t, err)
	t.Cleanup(func() {
		if st, err := dst.State(context.Background()); err == nil && st != "shut off" {
			_ = dst.Destroy(context.Background())
		}
	})

	require.NoError(t, src.Start(ctx))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := os.Stat(filepath.Join(share, migration.UpFile))
		assert.NoError(c, err, "the guest has not opened its files yet; console:\n%s", src.Console())
	}, 3*time.Minute, 200*time.Millisecond)

	_, err = libvirt.Virsh(ctx, p.Src, "migrate", "--live", d.Name,
		"qemu+unix:///system?socket="+destSock, "--migrateuri", "unix://"+filepath.Join(migDir, "migrate.sock"))
	require.NoError(t, err, "destination:\n%s", journalText(t, p.Dst))
	st, err := dst.State(ctx)
	require.NoError(t, err)
	assert.Equal(t, "running", st, "the domain runs on the destination")
	st, err = src.State(ctx)
	require.NoError(t, err)
	assert.Equal(t, "shut off", st, "libvirt ends the source's QEMU")
	requireEndedCleanly(t, p.Src, "source")

	require.NoError(t, os.WriteFile(filepath.Join(share, migration.MigratedFile), []byte("host\n"), 0o644))
	// The domain is transient on the destination: it goes away when it
	// powers off.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, err := dst.State(ctx)
		assert.True(c, err != nil || st == "shut off", "the guest still runs on the destination (%s); console:\n%s", st, dst.Console())
	}, migration.GuestTimeout, time.Second)
	res, err := guest.ParseSerial(src.Console() + "\n" + dst.Console())
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	requireWritesKept(t, share, res)
	requireEndedCleanly(t, p.Dst, "destination")
}

// twoHosts gives the box a hostname and a libvirt host UUID of its own:
// libvirt refuses to migrate to a host with its own name or UUID ("Attempt
// to migrate guest to the same host", libvirt's qemu_migration_cookie.c), and
// both boxes run on this machine.
func twoHosts(ctx context.Context, b *shimbox.Box) error {
	name := "host-" + strings.ToLower(rand.Text()[:8])
	if out, err := b.Run(ctx, "hostname", name); err != nil {
		return fmt.Errorf("set the box's hostname: %w: %s", err, out)
	}
	u := make([]byte, 16)
	_, _ = rand.Read(u)
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	conf := "/etc/libvirt/libvirtd.conf"
	old, err := os.ReadFile(b.Path(conf))
	if err != nil {
		return err
	}
	return b.WriteFile(conf, append(old, []byte("\nhost_uuid = \""+uuid+"\"\n")...), 0o644)
}

// exposeLibvirt makes the destination's libvirtd reachable from the
// source: a socket in the pair's shared folder, in the destination's
// systemd, whose systemd-socket-proxyd forwards to libvirtd's socket. It
// returns the socket's path, the same in both boxes.
func exposeLibvirt(t *testing.T, p *shimbox.Pair) string {
	t.Helper()
	sock := filepath.Join(p.Dir, "dst-libvirt.sock")
	ctx := context.Background()
	require.NoError(t, p.Dst.WriteFile("/run/systemd/system/libvirt-proxy.socket",
		[]byte("[Socket]\nListenStream="+sock+"\n"), 0o644))
	require.NoError(t, p.Dst.WriteFile("/run/systemd/system/libvirt-proxy.service",
		[]byte("[Service]\nExecStart=/usr/lib/systemd/systemd-socket-proxyd /run/libvirt/libvirt-sock\n"), 0o644))
	out, err := p.Dst.Systemctl(ctx, "daemon-reload")
	require.NoError(t, err, out)
	out, err = p.Dst.Systemctl(ctx, "start", "libvirt-proxy.socket")
	require.NoError(t, err, out)
	return sock
}
