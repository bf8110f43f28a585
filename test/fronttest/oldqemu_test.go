package fronttest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// debian12QEMU is Debian 12's own QEMU 7.2, on this host: it predates
// vhost-user back-end state transfer (QEMU 8.2) and negotiates no
// DEVICE_STATE.
const debian12QEMU = "/usr/bin/qemu-system-x86_64"

// TestGuestOfQEMU72KeepsItsDataAcrossSwapsAndARestart: the front gives
// the Rust virtiofsd the DEVICE_STATE that QEMU 7.2 does not negotiate,
// and swaps it under the guest as under QEMU 10; halfway, the session is
// saved for a restart and resumed by another Front, as the next shim does.
func TestGuestOfQEMU72KeepsItsDataAcrossSwapsAndARestart(t *testing.T) {
	out, err := exec.Command(debian12QEMU, "--version").Output()
	require.NoError(t, err, "Debian 12's QEMU (scripts/deps.sh: qemu-system-x86)")
	require.True(t, strings.HasPrefix(string(out), "QEMU emulator version 7.2"), "want QEMU 7.2, got %q", out)

	r := bootOn(t, debian12QEMU, workload(""), nil, func(*rig) front.Config { return front.Config{} })
	st := r.front.Status()
	t.Logf("protocol features: QEMU set %#x, virtiofsd got %#x", st.Setup.ProtocolFeatures, st.Setup.BackendProtocolFeatures)
	assert.Zero(t, st.Setup.ProtocolFeatures&vhostuser.ProtoDeviceState, "QEMU 7.2 negotiates no DEVICE_STATE")
	assert.NotZero(t, st.Setup.BackendProtocolFeatures&vhostuser.ProtoDeviceState, "virtiofsd got it from the front")
	require.True(t, st.Swappable, st.Reason)
	for i := 1; i <= 2; i++ {
		r.swap(t, i)
	}
	r.restart(t, 3)
	for i := 4; i <= 5; i++ {
		r.swap(t, i)
	}
	r.finish(t, 5) // the restart counts as a handover
}

// restart saves the session for a restart, passes the checkpoint through
// descriptors as systemd's store does, and resumes it with a new Front
// on a new virtiofsd.
func (r *rig) restart(t *testing.T, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	old := r.current
	cp, err := r.front.SaveForRestart(ctx)
	require.NoError(t, err, "save for restart\nconsole:\n%s\nvirtiofsd:\n%s", r.m.Serial(), old.stderr())
	require.ErrorIs(t, <-r.ran, front.ErrSavedForRestart)
	assert.NoError(t, old.wait(), "the saved virtiofsd exits by itself\n%s", old.stderr())

	stored := map[string][]*os.File{}
	for _, nf := range cp.Named() {
		d, err := dupFile(nf.File)
		require.NoError(t, err)
		stored[nf.Name] = append(stored[nf.Name], d)
	}
	cp.Close()
	defer func() {
		for _, fs := range stored {
			for _, f := range fs {
				f.Close()
			}
		}
	}()
	loaded, err := front.LoadCheckpoint(stored)
	require.NoError(t, err)
	next := startVirtiofsd(t, r.bin, r.dir, r.share, i)
	r.pids[next.cmd.Process.Pid] = true
	f, err := front.Resume(ctx, loaded, next.conn, front.Config{})
	require.NoError(t, err, "resume\nconsole:\n%s\nvirtiofsd:\n%s", r.m.Serial(), next.stderr())
	st := f.Status()
	assert.NotZero(t, st.Setup.BackendProtocolFeatures&vhostuser.ProtoDeviceState, "the resumed virtiofsd got DEVICE_STATE")
	r.front, r.current = f, next
	go func() { r.ran <- f.Run(r.ctx) }()
	t.Logf("restart %d: pid %d -> %d", i, old.cmd.Process.Pid, next.cmd.Process.Pid)
}

// dupFile is a close-on-exec duplicate of f, as systemd's store hands
// back its own descriptor; it leaves f's blocking mode alone (f.Fd()
// would make the VM's connection blocking under the front).
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var dupErr error
	if err := rc.Control(func(fd uintptr) { nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, dupErr
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
