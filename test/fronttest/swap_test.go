package fronttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	vhostpeer "github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// tag is the guest's mount tag.
const tag = "fs"

// Files the guest and the host exchange in the share.
const (
	upFile     = "up"     // the guest holds its files open: the host may swap
	stopFile   = "stop"   // the host is done swapping: the guest checks and reports
	heldFile   = "held"   // opened for reading before the first swap, read after the last
	appendFile = "append" // held open for appending throughout
)

const heldContent = "written by the host before the guest opened it"

// workload is the guest's script: it mounts the share, runs prelude, holds heldFile open for reading and
// appendFile for appending, then until stopFile appears creates a file
// with random content (fsync'd), renames it, reads it back past the page
// cache and compares its checksum, appends a line, lists the folder and
// removes old files. Each failure is printed and counted; at the end it
// reads heldFile through the descriptor it opened first and reports:
//
//	RESULT errors=N       failures seen by the guest (want 0)
//	RESULT rounds=N       how many rounds ran
//	RESULT held=ok|...    heldFile read through the old descriptor
func workload(prelude string) string {
	return fmt.Sprintf(`mount -t virtiofs %[1]s /mnt/%[1]s || exit 1
cd /mnt/%[1]s
%[7]s
exec 3>>%[3]s 4<%[2]s
echo up >%[4]s
errors=0
i=0
fail() { errors=$((errors+1)); echo "GUEST ERROR round $i: $*"; }
while [ ! -e %[5]s ]; do
	i=$((i+1))
	dd if=/dev/urandom of=/tmp/src bs=4096 count=1 2>/dev/null
	want=$(md5sum </tmp/src)
	dd if=/tmp/src of=tmp.$i bs=4096 conv=fsync 2>/dev/null || fail "write tmp.$i"
	mv tmp.$i data.$i || fail "rename tmp.$i"
	echo 3 >/proc/sys/vm/drop_caches
	[ "$(md5sum <data.$i)" = "$want" ] || fail "checksum of data.$i"
	echo "round $i" >&3 || fail "append"
	ls >/dev/null || fail "readdir"
	[ "$(ls data.* | wc -l)" -le 5 ] || fail "too many data files"
	if [ $i -gt 4 ]; then rm data.$((i-4)) || fail "unlink data.$((i-4))"; fi
	sleep 0.1
done
held=$(cat <&4) || fail "read the held file"
[ "$held" = %[6]q ] && echo "RESULT held=ok" || { fail "held file reads '$held'"; echo "RESULT held=bad"; }
[ "$(wc -l <%[3]s)" = "$i" ] || fail "append has $(wc -l <%[3]s) lines, want $i"
echo "RESULT rounds=$i"
echo "RESULT errors=$errors"
`, tag, heldFile, appendFile, upFile, stopFile, heldContent, prelude)
}

// rebind is a prelude for workload: the guest unmounts the share, unbinds
// its virtio device from the virtiofs driver, binds it again and mounts
// anew. QEMU then stops the rings and resets the device, and starts them
// again without sending the memory again (DESIGN.md): the front must
// give a new virtiofsd the regions it recorded before.
const rebind = `cd /
umount /mnt/fs || exit 1
dev=$(ls /sys/bus/virtio/drivers/virtiofs | grep '^virtio')
echo $dev >/sys/bus/virtio/drivers/virtiofs/unbind || exit 1
echo $dev >/sys/bus/virtio/drivers/virtiofs/bind || exit 1
mount -t virtiofs fs /mnt/fs || exit 1
cd /mnt/fs
echo "RESULT rebound=$dev"
`

// TestGuestKeepsItsDataWhileVirtiofsdIsSwappedTenTimes is the judge of the
// swap order: a real guest, the real QEMU 10 and the real Rust virtiofsd.
// Halfway, a swap onto a virtiofsd that cannot load the state is refused
// and rolled back under the same guest.
func TestGuestKeepsItsDataWhileVirtiofsdIsSwappedTenTimes(t *testing.T) {
	r := boot(t, "")
	for i := 1; i <= 10; i++ {
		if i == 5 {
			r.refusedLoad(t, i)
		}
		r.swap(t, i)
	}
	r.finish(t, 10)
}

// TestGuestKeepsItsDataWhenSwappedAfterItsDriverRestarted: the memory QEMU
// sent once, before the device's reset, reaches each new virtiofsd.
func TestGuestKeepsItsDataWhenSwappedAfterItsDriverRestarted(t *testing.T) {
	r := boot(t, rebind)
	for i := 1; i <= 3; i++ {
		r.swap(t, i)
	}
	st := r.front.Status()
	assert.Len(t, st.Setup.Regions, 1, "the guest's memory is still recorded")
	res := r.finish(t, 3)
	assert.NotEmpty(t, res.Values["rebound"], "the guest restarted its driver:\n%s", res.Serial)
}

// rig is a guest running workload on a share served through a Front.
type rig struct {
	ctx             context.Context
	bin, dir, share string
	m               *guest.Machine
	front           *front.Front
	ran             chan error
	pids            map[int]bool

	mu      sync.Mutex // guards current once a Respawn may change it
	current *proc
}

// boot starts a virtiofsd, boots the guest with workload(prelude) on it
// through a Front, and waits until the guest holds its files open.
// Everything it starts ends with the test.
func boot(t *testing.T, prelude string) *rig {
	return bootWith(t, workload(prelude), nil, func(*rig) front.Config { return front.Config{} })
}

// bootWith is boot with the guest's whole script, a live copy of its
// console, and the Front's config made for the rig.
func bootWith(t *testing.T, script string, console io.Writer, cfg func(*rig) front.Config) *rig {
	return bootOn(t, "", script, console, cfg)
}

// bootOn is bootWith under another QEMU than the tree's QEMU 10: the
// qemu-system-x86_64 at qemuPath ("" for the tree's).
func bootOn(t *testing.T, qemuPath, script string, console io.Writer, cfg func(*rig) front.Config) *rig {
	sdbox.RequireRoot(t) // the tree's build, virtiofsd's namespace sandbox
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	tree, err := distro.Debian13(ctx)
	require.NoError(t, err, "the Debian 13 tree with QEMU 10 and the Rust virtiofsd")
	r := &rig{ctx: ctx, ran: make(chan error, 1), pids: map[int]bool{}}
	r.bin, err = tree.RustVirtiofsd()
	require.NoError(t, err)
	qemu := qemuPath
	if qemu == "" {
		qemu, err = tree.QEMU()
		require.NoError(t, err)
	}
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err, "prepare the guest image")

	r.dir, err = os.MkdirTemp("/var/tmp", "front") // short: unix socket paths
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(r.dir) })
	r.share = filepath.Join(r.dir, "share")
	require.NoError(t, os.Mkdir(r.share, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(r.share, heldFile), []byte(heldContent+"\n"), 0o644))

	// The VM's socket, which systemd owns in the product.
	vmSock := filepath.Join(r.dir, "vm.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: vmSock, Net: "unix"})
	require.NoError(t, err)
	defer ln.Close()

	r.current = startVirtiofsd(t, r.bin, r.dir, r.share, 0)
	r.pids[r.current.cmd.Process.Pid] = true
	r.m, err = guest.Start(ctx, img, guest.Spec{
		QEMU: qemu, Script: script, Timeout: 8 * time.Minute, WorkDir: r.dir, Console: console,
		Shares: []guest.Share{{Tag: tag, Socket: vmSock}},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		r.m.Kill()
		_, _ = r.m.Wait()
	})
	vm, err := ln.AcceptUnix()
	require.NoError(t, err, "QEMU connects")
	r.front = front.New(vm, r.current.conn, cfg(r))
	go func() { r.ran <- r.front.Run(ctx) }()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := os.Stat(filepath.Join(r.share, upFile))
		assert.NoError(c, err)
	}, 4*time.Minute, 200*time.Millisecond, "the guest mounts the share and holds its files; console:\n%s", r.m.Serial())
	return r
}

// notAnnounced is the Rust virtiofsd's warning when its SAVE comes with no
// F_LOG_ALL before it (a snapshot, or a swap not announced): it then
// prepares its state inside the pause.
const notAnnounced = "Front-end did not announce migration to begin"

// swap moves the guest onto a new virtiofsd, after a second of the
// guest's work. Even swaps are announced first (front.Announce, as a
// reload does): the real virtiofsd takes the announce as a migration's
// start and prepares its save before it (it does not warn that it was not
// told); odd swaps are not, and it warns.
func (r *rig) swap(t *testing.T, i int) {
	t.Helper()
	announced := i%2 == 0
	if announced {
		// The shim's reload waits for virtiofsd's preparation thread to
		// end (service.announceSwap): the real one starts it at the
		// announce and ends it once prepared.
		pids := proctree.Tree(r.current.cmd.Process.Pid)
		baseline := proctree.TreeThreads(pids)
		require.NoError(t, r.front.Announce(r.ctx), "swap %d: announce", i)
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		assert.True(t, proctree.WaitThreads(ctx, pids, baseline, 2*time.Millisecond),
			"swap %d: virtiofsd's threads are back to %d after the announce", i, baseline)
		cancel()
	}
	time.Sleep(time.Second) // the guest works between swaps
	next := startVirtiofsd(t, r.bin, r.dir, r.share, i)
	require.False(t, r.pids[next.cmd.Process.Pid], "swap %d: a new virtiofsd", i)
	r.pids[next.cmd.Process.Pid] = true
	old := r.current
	res, err := r.front.Swap(r.ctx, next.conn)
	require.NoError(t, err, "swap %d\nconsole:\n%s\nold virtiofsd:\n%s\nnew virtiofsd:\n%s", i, r.m.Serial(), old.stderr(), next.stderr())
	if announced {
		assert.NotContains(t, old.stderr(), notAnnounced, "swap %d: announced", i)
	} else {
		assert.Contains(t, old.stderr(), notAnnounced, "swap %d: not announced", i)
	}
	t.Logf("swap %d: pause %v (save %v, load %v), state %d bytes, pid %d -> %d",
		i, res.Pause, res.Save, res.Load, res.StateSize, old.cmd.Process.Pid, next.cmd.Process.Pid)
	assert.NoError(t, old.wait(), "swap %d: the old virtiofsd exits by itself once its connection is closed\n%s", i, old.stderr())
	select {
	case err := <-r.ran:
		t.Fatalf("swap %d: the front ended: %v", i, err)
	default:
	}
	r.current = next
}

// finish tells the guest to stop, and checks what it and the host saw.
func (r *rig) finish(t *testing.T, swaps int) *guest.Result {
	t.Helper()
	st := r.front.Status()
	assert.Equal(t, swaps, st.Swaps)
	assert.Zero(t, st.UnknownRequests)

	require.NoError(t, os.WriteFile(filepath.Join(r.share, stopFile), nil, 0o644))
	res, err := r.m.Wait()
	require.NoError(t, err, "the guest finishes; virtiofsd:\n%s", r.current.stderr())
	assert.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "0", res.Values["errors"], "the guest saw no error:\n%s", res.Serial)
	assert.Equal(t, "ok", res.Values["held"], "the file held open across the swaps reads back")
	rounds, _ := strconv.Atoi(res.Values["rounds"])
	assert.Greater(t, rounds, swaps, "the guest worked throughout")
	lines, err := os.ReadFile(filepath.Join(r.share, appendFile))
	require.NoError(t, err)
	assert.Equal(t, rounds, bytes.Count(lines, []byte("\n")), "every append landed, as the host sees it")
	assert.NotContains(t, r.m.Stderr(), "vhost", "QEMU saw no vhost-user error (no disconnect)")
	assert.NoError(t, <-r.ran, "the front ends cleanly when QEMU quits")
	assert.NoError(t, r.current.wait(), "the last virtiofsd exits once QEMU has gone\n%s", r.current.stderr())
	return res
}

// refusedLoad tries a swap onto a virtiofsd that cannot load the state
// (its shared folder lacks the guest's files, which find-paths looks up
// by path): the swap fails at LOAD, the old virtiofsd gets its rings back,
// and the guest, checking its data throughout, must see nothing.
func (r *rig) refusedLoad(t *testing.T, i int) {
	t.Helper()
	elsewhere := filepath.Join(r.dir, "elsewhere")
	require.NoError(t, os.MkdirAll(elsewhere, 0o755))
	bad := startVirtiofsd(t, r.bin, r.dir, elsewhere, 100+i)
	_, err := r.front.Swap(r.ctx, bad.conn)
	var se *front.SwapError
	require.ErrorAs(t, err, &se, "a virtiofsd whose folder lacks the guest's files loads its state\n%s", bad.stderr())
	assert.Equal(t, front.StepLoad, se.Step, "%v", err)
	assert.True(t, se.Kept, "the old virtiofsd keeps the session: %v", err)
	t.Logf("refused swap: %v", err)
	assert.NoError(t, bad.wait(), "the refused virtiofsd exits once its connection is closed\n%s", bad.stderr())
	assert.Contains(t, bad.stderr(), "Failed to load state", "virtiofsd says why")
}

// proc is one virtiofsd started for the test, and the connection to it.
type proc struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	log  string // its stderr
	done chan error
}

// stderr is what virtiofsd wrote so far.
func (p *proc) stderr() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// startVirtiofsd starts a virtiofsd with the shim's argv on a private
// listening socket (fd 3) and connects to it; it is killed, if still
// running, when the test ends.
func startVirtiofsd(t *testing.T, bin, dir, share string, n int) *proc {
	t.Helper()
	p, err := spawnVirtiofsd(t, bin, dir, share, n)
	require.NoError(t, err)
	return p
}

// spawnVirtiofsd is startVirtiofsd for any goroutine: it fails with an
// error rather than the test.
func spawnVirtiofsd(t *testing.T, bin, dir, share string, n int) (*proc, error) {
	sock := filepath.Join(dir, "virtiofsd"+strconv.Itoa(n)+".sock")
	lf, err := vhostpeer.Listen(sock)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	args, err := virtiofsd.Args(virtiofsd.Rust, virtiofsd.Options{SharedDir: share})
	if err != nil {
		return nil, err
	}
	p := &proc{cmd: exec.Command(bin, args...), log: filepath.Join(dir, "virtiofsd"+strconv.Itoa(n)+".log"), done: make(chan error, 1)}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd.Env = virtiofsd.ChildEnv(os.Environ(), virtiofsd.Rust)
	p.cmd.ExtraFiles = []*os.File{lf}
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to virtiofsd's private socket: %w", err)
	}
	p.conn = c
	return p, os.Remove(sock)
}

// wait waits for virtiofsd to exit and says how it ended: nil for exit 0.
func (p *proc) wait() error {
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			return fmt.Errorf("virtiofsd: %w", err)
		}
		return nil
	case <-time.After(time.Minute):
		return errors.New("virtiofsd still runs a minute after its connection was closed")
	}
}
