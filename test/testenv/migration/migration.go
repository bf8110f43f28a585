// Package migration live-migrates a real guest between two hosts, each a
// private systemd with virtiofsd-shim installed (shimbox.Pair), while the
// guest keeps a file on its virtiofs share open and keeps writing to it.
//
// The hosts are the Debian 13 leg (the Rust virtiofsd 1.13, QEMU 10, libvirt
// 11): the C virtiofsd of Debian 12 cannot migrate. Both serve the same
// instance (Instance) with the same config, its SHARED_DIR a folder of
// Pair.Dir that both see. QEMU runs on this host through the tree's loader,
// its vhost-user-fs device connected to each box's systemd-owned socket: the
// source's QEMU to the source's, and the destination's QEMU (-incoming
// defer, then QMP migrate-incoming) to the destination's, whose connection
// starts the destination's session before any state arrives. The source's
// QMP migrate sends the guest to a unix socket in Pair.Dir.
//
// The suite test/migrationtest (its scenarios and libvirt's virsh migrate)
// and the bench (test/bench, for its figures) share VM and Migrate.
package migration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// Instance is the instance both hosts serve, and the guest's mount tag.
const Instance = "vm1"

// GuestTimeout bounds one guest's life, from the source's boot to the
// destination's power-off, under TCG on a loaded machine.
const GuestTimeout = 5 * time.Minute

// Files the guest script and the host exchange in the share.
const (
	// UpFile appears once the guest has mounted the share and opened its
	// files: the host may migrate.
	UpFile = "up"
	// MigratedFile is what the host creates once the migration is over: the
	// guest then stops its loop, writes "after" and reads its open file.
	MigratedFile = "migrated"
	// HeldFile is the file the guest holds open (fd 3 to append, fd 4 to
	// read) across the migration.
	HeldFile = "held"
	// NewFile is what the guest writes, opened after the migration.
	NewFile = "new"
	// GoneFile is the file the guest holds open and deletes (Script with
	// deleted): find-paths cannot migrate it.
	GoneFile = "gone"
)

// Script is the guest's script: it mounts the share, holds HeldFile open
// (and, with deleted, GoneFile open but unlinked), creates UpFile, appends
// "before N" to HeldFile every 0.2 s until MigratedFile appears, then
// appends "after" through the same open file, reads the whole file back
// through the descriptor it opened before the migration, writes NewFile,
// and reports:
//
//	RESULT first=before 1      the first line read through the old descriptor
//	RESULT last=after          the last one
//	RESULT lines=N             how many
//	RESULT gone=ok|failed      with deleted: a write to the deleted file
//	RESULT done=yes
func Script(deleted bool) string {
	var s strings.Builder
	fmt.Fprintf(&s, "set -e\nmount -t virtiofs %s /mnt/%s\ncd /mnt/%s\n", Instance, Instance, Instance)
	fmt.Fprintf(&s, "exec 3>>%s 4<%s\n", HeldFile, HeldFile)
	if deleted {
		fmt.Fprintf(&s, "exec 5<>%s\necho 'deleted but open' >&5\nrm %s\n", GoneFile, GoneFile)
	}
	fmt.Fprintf(&s, `echo up >%s
i=0
while [ ! -e %s ]; do
	i=$((i+1))
	echo "before $i" >&3
	sleep 0.2
done
echo after >&3
content=$(cat <&4)
echo "RESULT first=$(echo "$content" | head -n 1)"
echo "RESULT last=$(echo "$content" | tail -n 1)"
echo "RESULT lines=$(echo "$content" | wc -l)"
echo "written after the migration" >%s
`, UpFile, MigratedFile, NewFile)
	if deleted {
		s.WriteString("if echo more >&5 2>/dev/null; then echo RESULT gone=ok; else echo RESULT gone=failed; fi\n")
	}
	s.WriteString("echo RESULT done=yes\n")
	return s.String()
}

// VM is one guest: its QEMU on the source host and, once Migrate ran, on
// the destination.
type VM struct {
	pair   *shimbox.Pair
	socket string // inside both hosts
	spec   guest.Spec
	img    *guest.Image
	Src    *guest.Machine
	Dst    *guest.Machine // nil before Migrate
}

// Boot boots the guest under the source host's instance, running script.
// Its QMP sockets and the migration socket are in pair.Dir. The caller
// ends it with Close.
func Boot(ctx context.Context, pair *shimbox.Pair, img *guest.Image, script string) (*VM, error) {
	return BootOn(ctx, pair, img, script, shimbox.SocketPath(Instance))
}

// BootOn is Boot with the guest's device on another vhost-user socket,
// the same path inside both hosts (a bare virtiofsd unit's, say).
func BootOn(ctx context.Context, pair *shimbox.Pair, img *guest.Image, script, socket string) (*VM, error) {
	qemu, err := pair.Src.Platform.QEMU(ctx)
	if err != nil {
		return nil, err
	}
	vm := &VM{pair: pair, img: img, socket: socket, spec: guest.Spec{
		QEMU:    qemu,
		Script:  script,
		Timeout: GuestTimeout,
		WorkDir: pair.Dir,
	}}
	spec := vm.spec
	spec.Shares = []guest.Share{{Tag: Instance, Socket: pair.Src.Path(socket)}}
	spec.QMP = filepath.Join(pair.Dir, "src.qmp")
	if vm.Src, err = guest.Start(ctx, img, spec); err != nil {
		return nil, fmt.Errorf("boot the guest on the source host: %w", err)
	}
	return vm, nil
}

// StartDestination starts the destination's QEMU with -incoming defer: it
// connects to the destination host's socket at once, and waits for
// Migrate. Migrate calls it when it has not run. ctx bounds the QEMU's
// life, as in guest.Start.
func (vm *VM) StartDestination(ctx context.Context) error {
	if vm.Dst != nil {
		return nil
	}
	spec := vm.spec
	spec.Shares = []guest.Share{{Tag: Instance, Socket: vm.pair.Dst.Path(vm.socket)}}
	spec.QMP = filepath.Join(vm.pair.Dir, "dst.qmp")
	spec.Incoming = "defer"
	m, err := guest.Start(ctx, vm.img, spec)
	if err != nil {
		return fmt.Errorf("start the destination's QEMU: %w", err)
	}
	vm.Dst = m
	return nil
}

// MigrationURI is where the destination's QEMU listens for the migration
// stream, in the folder both hosts see.
func (vm *VM) MigrationURI() string { return "unix:" + filepath.Join(vm.pair.Dir, "migrate.sock") }

// Info is what QMP query-migrate says of a migration that has ended.
type Info struct {
	// Status is "completed", "failed" or "cancelled".
	Status string `json:"status"`
	// TotalTime is in milliseconds, from start to end.
	TotalTime int64 `json:"total-time"`
	// Downtime is in milliseconds: the guest paused, from stop on the
	// source to its start on the destination.
	Downtime int64 `json:"downtime"`
	// ErrorDesc says why, when it failed.
	ErrorDesc string `json:"error-desc"`
}

// Options of one migration.
type Options struct {
	// ReturnPath enables QEMU's return-path migration capability on both
	// sides: the destination then tells the source whether it loaded the
	// state, and a source whose destination failed resumes the guest
	// instead of staying paused after a "completed" migration.
	ReturnPath bool
}

// migrateTimeout bounds one migration of the 512 MiB guest under TCG.
const migrateTimeout = 3 * time.Minute

// Migrate migrates the running guest: the destination's QEMU (started now
// if StartDestination has not run) gets the capabilities and QMP
// migrate-incoming, the source's QMP migrate to MigrationURI, then the
// source's query-migrate is polled until the migration has ended. The
// error is for the harness; a migration that failed is Info.Status
// "failed".
func (vm *VM) Migrate(ctx context.Context, o Options) (Info, error) {
	if err := vm.StartDestination(ctx); err != nil { // ctx bounds its life
		return Info{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	src, dst := vm.Src.QMP(), vm.Dst.QMP()
	if o.ReturnPath {
		caps := map[string]any{"capabilities": []map[string]any{{"capability": "return-path", "state": true}}}
		for _, q := range []*guest.QMP{dst, src} {
			if err := q.Execute(ctx, "migrate-set-capabilities", caps, nil); err != nil {
				return Info{}, err
			}
		}
	}
	uri := vm.MigrationURI()
	if err := dst.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		return Info{}, err
	}
	if err := src.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return Info{}, err
	}
	for {
		var info Info
		if err := src.Execute(ctx, "query-migrate", nil, &info); err != nil {
			return Info{}, err
		}
		switch info.Status {
		case "completed", "failed", "cancelled":
			return info, nil
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("migration still %q after %v: %w", info.Status, migrateTimeout, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Signal creates name in the guest's share: MigratedFile ends the guest's
// loop.
func (vm *VM) Signal(share, name string) error {
	return os.WriteFile(filepath.Join(share, name), []byte("host\n"), 0o644)
}

// QuitSource has the source's QEMU quit (QMP quit), as libvirt does after
// a completed migration, and waits for it; the source's session then ends.
func (vm *VM) QuitSource(ctx context.Context) error {
	if err := vm.Src.QMP().Execute(ctx, "quit", nil, nil); err != nil {
		return err
	}
	_, err := vm.Src.Wait()
	return err
}

// Wait waits for the guest to power off on whichever QEMU runs it (the
// destination's after a completed migration, else the source's) and
// returns what its script reported: the source's console followed by the
// destination's.
func (vm *VM) Wait(onDestination bool) (*guest.Result, error) {
	m := vm.Src
	if onDestination {
		m = vm.Dst
	}
	if _, err := m.Wait(); err != nil {
		return nil, err
	}
	serial := vm.Src.Serial()
	if vm.Dst != nil {
		serial += "\n" + vm.Dst.Serial()
	}
	return guest.ParseSerial(serial)
}

// Close kills whatever QEMU still runs and reaps it; how each ended is for
// Wait and the tests to judge.
func (vm *VM) Close() {
	for _, m := range []*guest.Machine{vm.Src, vm.Dst} {
		if m != nil {
			m.Kill()
			_, _ = m.Wait()
		}
	}
}
