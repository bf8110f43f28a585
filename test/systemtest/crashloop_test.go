package systemtest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// TestACrashLoopGivesUpWithItsOwnExitStatusAndTheVMRunsOn runs, on the
// Debian 13 leg, a virtiofsd that dies at every start after the first (a
// wrapper that exits once its marker exists; the shim's --version and
// --print-capabilities probes pass through). After a kill of the first,
// each fresh one dies before it is ready, and at the bound the shim gives
// up: the unit ends with exit status 71 and is not restarted, the journal,
// the state and list say it gave up, and no stale "Serving" status remains.
// As documented, the guest's share then waits for good: a process that
// touches it hangs (in the kernel, unkillable), so the guest does that in
// the background. The VM runs on: QEMU answers QMP and the guest's console
// goes on printing. Once the VM quits nothing is left.
func TestACrashLoopGivesUpWithItsOwnExitStatusAndTheVMRunsOn(t *testing.T) {
	b := box(t, shimbox.Debian13)
	qemu, err := shimbox.Debian13.QEMU(t.Context())
	require.NoError(t, err)
	const unit = "virtiofsd@x.service"
	dir, err := b.Share("x")
	require.NoError(t, err)
	marker := filepath.Join(dir, "started-once")
	wrapper := filepath.Join(dir, "virtiofsd-once")
	require.NoError(t, os.WriteFile(wrapper, []byte("#!/bin/sh\ncase \"$*\" in *--version*|*--print-capabilities*|*--help*) ;; *) [ -e "+marker+" ] && exit 1; touch "+marker+";; esac\nexec "+shimbox.Debian13.Virtiofsd()+" \"$@\"\n"), 0o755))
	require.NoError(t, b.Configure("x", "SHARED_DIR="+dir+"\nVIRTIOFSD="+wrapper+"\n"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello"), []byte("hello\n"), 0o644))
	enable(t, b, "x")
	statePath := shimstate.Path(b.Path("/run"), "x")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	run := testdir.Short(t) // QEMU's QMP socket
	m, err := guest.Start(ctx, img, guest.Spec{
		QEMU:    qemu,
		Timeout: 4 * time.Minute,
		QMP:     filepath.Join(run, "qmp"),
		Shares:  []guest.Share{{Tag: "x", Socket: b.Socket("x")}},
		Script: `mount -t virtiofs x /mnt/x || exit 1
echo "RESULT before=$(timeout 10 cat /mnt/x/hello)"
echo 1 >/mnt/x/ready
# In the background: once the shim gives up, this waits for good.
(while cat /mnt/x/hello >/dev/null 2>&1; do sleep 0.1; done; echo "RESULT share_failed=yes") &
# The console, which touches no share, goes on.
i=0; while [ $i -lt 2000 ]; do echo "RESULT beat=$i"; sleep 0.1; i=$((i+1)); done
`,
	})
	require.NoError(t, err)
	defer func() {
		m.Kill()
		_, _ = m.Wait()
	}()
	if !pollUntil(ctx, func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil }) {
		t.Fatalf("the guest never announced it\n%s", m.Serial())
	}
	st, err := shimstate.Read(statePath)
	require.NoError(t, err)
	require.NotZero(t, st.VirtiofsdPID, "a virtiofsd serves the guest")
	_, err = b.Run(ctx, "kill", "-9", strconv.Itoa(st.VirtiofsdPID))
	require.NoError(t, err)

	if !pollUntil(ctx, func() bool { return state(t, b, unit) == "failed/failed" }) {
		t.Fatalf("the unit never failed\n%s", status(b, unit))
	}
	p := show(t, b, unit, "ExecMainStatus", "StatusText", "NRestarts", "NFileDescriptorStore")
	assert.Equal(t, "71", p["ExecMainStatus"], status(b, unit))
	assert.Equal(t, "0", p["NRestarts"], "exit status 71 is not restarted (Restart=on-abnormal)")
	assert.Equal(t, "0", p["NFileDescriptorStore"], "nothing is kept for a session given up")
	assert.NotContains(t, p["StatusText"], "Serving", "no stale Serving status")
	assert.Contains(t, p["StatusText"], "gave up")
	gaveUp := waitJournal(t, b, "virtiofsd crashed too often: the shim gives up", "-u", unit, "-p", "err")
	assert.NotEmpty(t, gaveUp["MESSAGE"])
	st, err = shimstate.Read(statePath)
	require.NoError(t, err)
	require.NotNil(t, st.Failure)
	assert.Equal(t, 71, st.Failure.ExitCode)
	assert.Contains(t, st.Failure.Reason, "virtiofsd crashed 5 times within 1m0s")
	out, err := b.Run(ctx, shimbox.BinaryPath, "list", "--json", "x")
	require.NoError(t, err, out)
	var doc instances.Document
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	require.Len(t, doc.Instances, 1)
	assert.Contains(t, doc.Instances[0].Failure, "gave up", "list says the shim gave up: %s", out)

	// The VM runs on: QMP answers, and the console goes on past the give-up.
	beats := func() int {
		res, _ := guest.ParseSerial(m.Serial())
		if res == nil {
			return -1
		}
		n, _ := strconv.Atoi(res.Values["beat"])
		return n
	}
	after := beats()
	assert.True(t, pollUntil(ctx, func() bool { return beats() > after+5 }), "the guest's console goes on\n%s", m.Serial())
	s, err := m.QMP().Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "running", s, "QEMU keeps the VM running")
	assert.NotContains(t, m.Serial(), "RESULT share_failed", "the share waits, as documented, rather than failing")
	assert.Empty(t, virtiofsdFor(dir), "no virtiofsd left while the VM runs")

	m.Kill()
	_, _ = m.Wait()
	assert.Empty(t, virtiofsdFor(dir), "no virtiofsd left after the VM quit")
	assert.Equal(t, "0", show(t, b, unit, "MainPID")["MainPID"])
	assert.NotContains(t, strings.TrimSpace(virtiofsdProcesses(t, b)), dir)
	systemctl(t, b, "reset-failed", unit, "virtiofsd@x.socket")
}
