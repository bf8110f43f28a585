package systemtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// The OOM test's share: oomDirs folders of oomFiles empty files, which
// the guest looks up (ls -l: one inode, and one O_PATH descriptor, in
// virtiofsd for each; about 600 bytes charged to its memory cgroup), and
// the memory limit of the unit's cgroup, counted from when the shim and
// virtiofsd are moved in. virtiofsd's descriptors stop at 20,000 here
// (the hard limit it reports), 12 MiB charged: the limit must be below.
const (
	oomDirs  = 25
	oomFiles = 1000
	oomLimit = 6 << 20
)

// TestAVirtiofsdKilledByTheOOMKillerIsRecoveredLikeASIGKILL runs the
// Debian 13 leg's unit (Rust virtiofsd, shipped units, a real QEMU 10
// guest) under a small memory limit once the VM is served, and a guest
// that looks up more and more files until the kernel OOM-kills
// virtiofsd. The shim lives on and sees a SIGKILL, and the session is
// recovered as after one: no guest operation hangs, the state says
// degraded, and after umount and mount the share works and a file
// fsync'd before the kill reads back intact.
//
// The limit is what MemoryMax= sets on cgroup v1 (memory.limit_in_bytes),
// written by the test: the box's systemd puts no unit in a memory
// hierarchy on this cgroup v1 machine (see below). On cgroup v2 systemd
// sees the kill, and the unit's OOMPolicy=continue keeps it running.
func TestAVirtiofsdKilledByTheOOMKillerIsRecoveredLikeASIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	b, qemu, dir, statePath := guestInstance(t, shimbox.Debian13)
	cgroupFS := strings.TrimSpace(run(t, b, "stat", "-fc", "%T", "/sys/fs/cgroup"))
	t.Logf("the box's /sys/fs/cgroup is %s (tmpfs: cgroup v1, cgroup2fs: v2)", cgroupFS)
	for d := range oomDirs {
		sub := filepath.Join(dir, "many", fmt.Sprintf("d%03d", d))
		require.NoError(t, os.MkdirAll(sub, 0o755))
		for f := range oomFiles {
			require.NoError(t, os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d", f)), nil, 0o644))
		}
	}
	unit := "virtiofsd@x.service"
	// cgroup v1 here: the box's systemd (257) puts no unit in a memory
	// hierarchy (MemoryMax= shows, MemoryCurrent stays [not set]: it runs
	// under this machine's memory cgroup), so the test makes the unit's
	// memory cgroup itself and sets the limit MemoryMax= is on cgroup v1:
	// memory.limit_in_bytes, with the shim and virtiofsd moved in
	// (virtiofsd's later processes are born in it).
	own, err := os.ReadFile("/proc/self/cgroup")
	require.NoError(t, err)
	var parent string
	for _, line := range strings.Split(string(own), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == "memory" {
			parent = f[2]
		}
	}
	require.NotEmpty(t, parent, "no cgroup v1 memory hierarchy: on cgroup v2 use MemoryMax= in a drop-in")
	memcg := filepath.Join("/sys/fs/cgroup/memory", parent, "virtiofsd-shim-oom-"+strconv.Itoa(os.Getpid()))
	require.NoError(t, os.Mkdir(memcg, 0o755))
	t.Cleanup(func() {
		_ = os.Remove(memcg) // empty once the unit's processes have gone
	})

	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	m, err := guest.Start(ctx, img, guest.Spec{
		QEMU:    qemu,
		Timeout: 6 * time.Minute,
		Shares:  []guest.Share{{Tag: "x", Socket: b.Socket("x")}},
		Script: `cd /
mount -t virtiofs x /mnt/x || exit 1
m=/mnt/x
hangs=0
op() { timeout -s KILL 10 "$@"; rc=$?; [ $rc -eq 137 ] && { hangs=$((hangs+1)); echo "GUEST HANG: $*"; }; return $rc; }
dd if=/dev/urandom of=/tmp/f bs=4096 count=4 2>/dev/null
echo "$(sha256sum </tmp/f | cut -d' ' -f1)  $m/kept" >/tmp/sums
op dd if=/tmp/f of=$m/kept bs=4096 conv=fsync 2>/dev/null || echo "GUEST ERROR: write kept"
echo up >$m/ready
i=0
while [ ! -e $m/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
n=0
failed=no
for d in $m/many/*; do
	n=$((n+1))
	op ls -l $d >/dev/null 2>&1 || { failed=yes; break; }
done
echo "RESULT dirs=$n"
echo "RESULT failed=$failed"
op umount $m; echo "RESULT umount=$?"
op mount -t virtiofs x $m; echo "RESULT mount=$?"
op sha256sum -c /tmp/sums >/dev/null 2>&1; echo "RESULT kept=$?"
echo "RESULT listed=$(op ls $m/many/d000 | wc -l)"
echo "RESULT hangs=$hangs"
`,
	})
	require.NoError(t, err)
	var hostLog []string
	defer func() {
		if t.Failed() {
			m.Kill()
		}
		res, werr := m.Wait()
		t.Log(strings.Join(hostLog, "\n"))
		if !assert.NoError(t, werr, "the guest ran its script to the end") || res == nil {
			t.Log(status(b, unit))
			return
		}
		assert.Equal(t, 0, res.ExitStatus, res.Serial)
		t.Logf("the guest listed %s folders of %d files before the share failed", res.Values["dirs"], oomFiles)
		assert.Equal(t, "yes", res.Values["failed"], "the share failed once virtiofsd was killed\n%s", res.Serial)
		assert.Equal(t, "0", res.Values["hangs"], "no guest operation hung\n%s", res.Serial)
		assert.Equal(t, "0", res.Values["umount"], res.Serial)
		assert.Equal(t, "0", res.Values["mount"], res.Serial)
		assert.Equal(t, "0", res.Values["kept"], "the file fsync'd before the kill reads back intact\n%s", res.Serial)
		assert.Equal(t, strconv.Itoa(oomFiles), res.Values["listed"], "the share works after the remount\n%s", res.Serial)
		waitState(t, b, unit, "inactive/dead")
		assert.Empty(t, virtiofsdProcesses(t, b), "no virtiofsd is left once the VM has quit")
	}()

	require.True(t, pollUntil(ctx, func() bool {
		_, err := os.Stat(filepath.Join(dir, "ready"))
		return err == nil
	}), "the guest never mounted the share\n%s", m.Serial())
	served := show(t, b, unit, "MainPID")
	shimPID, err := strconv.Atoi(served["MainPID"])
	require.NoError(t, err)
	shimHost, err := hostPID(b, shimPID)
	require.NoError(t, err)
	procs := []int{shimHost}
	for i := 0; i < len(procs); i++ {
		procs = append(procs, hostChildren(procs[i])...)
	}
	require.NoError(t, os.WriteFile(filepath.Join(memcg, "memory.limit_in_bytes"), []byte(strconv.Itoa(oomLimit)), 0o644))
	for _, p := range procs {
		require.NoError(t, os.WriteFile(filepath.Join(memcg, "cgroup.procs"), []byte(strconv.Itoa(p)), 0o644), "move %d", p)
	}
	memRead := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(memcg, name))
		return strings.TrimSpace(string(b))
	}
	hostLog = append(hostLog, fmt.Sprintf("served: moved %d processes (the shim and virtiofsd) into %s, memory.limit_in_bytes=%s, usage %s",
		len(procs), memcg, memRead("memory.limit_in_bytes"), memRead("memory.usage_in_bytes")))
	before, err := shimstate.Read(statePath)
	require.NoError(t, err)
	require.NotNil(t, before)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644))

	rctx, rcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer rcancel()
	var after *shimstate.State
	recovered := pollUntil(rctx, func() bool {
		after, _ = shimstate.Read(statePath)
		return after != nil && (after.Degraded != nil || after.Phase.Over())
	})
	peak := show(t, b, unit, "MainPID")
	hostLog = append(hostLog, fmt.Sprintf("after: max usage %s, failcnt %s, oom_control %q; MainPID=%s (before %s)",
		memRead("memory.max_usage_in_bytes"), memRead("memory.failcnt"), memRead("memory.oom_control"), peak["MainPID"], served["MainPID"]))
	kern, _ := b.Run(ctx, "sh", "-c", "dmesg 2>/dev/null | grep -iE 'out of memory|oom-kill|Killed process' | tail -n 6")
	hostLog = append(hostLog, "kernel: "+strings.TrimSpace(kern))
	require.True(t, recovered, "virtiofsd was never killed: the guest's lookups stayed under %d bytes\n%s", oomLimit, status(b, unit))
	require.NotNil(t, after.Degraded, "the session was not recovered: %+v\n%s", after, status(b, unit))
	hostLog = append(hostLog, fmt.Sprintf("degraded: %+v, virtiofsd %d (was %d)", *after.Degraded, after.VirtiofsdPID, before.VirtiofsdPID))
	assert.Equal(t, served["MainPID"], peak["MainPID"], "the shim lives on: the kernel killed virtiofsd")
	assert.NotEqual(t, before.VirtiofsdPID, after.VirtiofsdPID, "a fresh virtiofsd serves")
	// Room again, so that the remount's fresh session is not killed too.
	require.NoError(t, os.WriteFile(filepath.Join(memcg, "memory.limit_in_bytes"), []byte("-1"), 0o644))
}
