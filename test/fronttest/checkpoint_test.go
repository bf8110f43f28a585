package fronttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
)

// checkpointWorkload is the guest's script for the checkpoint experiment
// (issue 25: is a virtiofsd restored from a checkpoint safe?). Before the
// checkpoints it holds two files open (fd 4 on held, fd 7 on known);
// after them it renames known away and writes a new file at its path,
// creates after, and opens post (fd 5, a handle the checkpoint does not
// know). After the host's kill -9 and the recovery with the checkpoint
// loaded, it reads each of them again, opens others (new handles and
// inodes in the restored virtiofsd), drops its caches (FORGET of inodes
// the checkpoint does not know) and says whether the share still answers.
// A value that is another file's content is wrong data.
func checkpointWorkload() string {
	return fmt.Sprintf(`cd /
mount -t virtiofs %[1]s /mnt/%[1]s || exit 1
m=/mnt/%[1]s
hangs=0
op() { timeout -s KILL 10 "$@"; rc=$?; [ $rc -eq 137 ] && { hangs=$((hangs+1)); echo "GUEST HANG: $*"; }; return $rc; }
exec 4<$m/%[2]s 7<$m/known
echo up >$m/%[3]s
i=0
while [ ! -e $m/ckptdone ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
mv $m/known $m/renamed
echo NEW >$m/known
echo AFTER >$m/after
cat $m/after >/dev/null
exec 5<$m/post
echo changed >$m/changed
i=0
while ! op test -e $m/recovered && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo 1 >/proc/sys/vm/drop_caches
echo "RESULT held_fd=$(op cat <&4 2>&1)"
echo "RESULT known_fd_renamed_after=$(op cat <&7 2>&1)"
echo "RESULT renamed=$(op cat $m/renamed 2>&1)"
echo "RESULT known=$(op cat $m/known 2>&1)"
echo "RESULT after=$(op cat $m/after 2>&1)"
exec 6<$m/other1 8<$m/other2
echo "RESULT post_fd_opened_after=$(op cat <&5 2>&1)"
echo "RESULT other1_fd=$(op cat <&6 2>&1)"
echo "RESULT after_again=$(op cat $m/after 2>&1)"
echo "RESULT new_file=$(op sh -c "echo NEWER >$m/newer && cat $m/newer" 2>&1)"
exec 4<&- 5<&- 6<&- 7<&- 8<&-
echo 3 >/proc/sys/vm/drop_caches
sleep 1
echo "RESULT after_forget=$(op ls $m >/dev/null 2>&1 && echo answers || echo fails)"
echo "RESULT hangs=$hangs"
`, tag, heldFile, upFile)
}

// TestCheckpointsMeasured is the checkpoint experiment of issue 25, not a
// feature test: it takes checkpoints (freeze and SAVE) under a guest,
// logs their pause, kills virtiofsd, recovers with the last checkpoint
// loaded, and logs what the guest then reads. It requires only that no
// guest operation hangs and that virtiofsd survives FORGETs of inodes the
// checkpoint does not know; the values are the report's evidence.
func TestCheckpointsMeasured(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	r := bootWith(t, checkpointWorkload(), nil, func(r *rig) front.Config {
		for name, content := range map[string]string{"known": "KNOWN", "post": "POST", "other1": "OTHER1", "other2": "OTHER2"} {
			require.NoError(t, os.WriteFile(filepath.Join(r.share, name), []byte(content+"\n"), 0o644))
		}
		return front.Config{RestoreCheckpoint: true, Respawn: r.respawner(t, 1, 300)}
	})

	var pauses []time.Duration
	// Checkpoints are paced (a ticker), not a wait for a condition.
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
		res, err := r.front.Checkpoint(ctx)
		cancel()
		require.NoError(t, err, "checkpoint %d\n%s", i, r.live().stderr())
		pauses = append(pauses, res.Pause)
		if i == 0 || i == 19 {
			t.Logf("checkpoint %d: pause %v (save %v), state %d bytes", i, res.Pause, res.Save, res.StateSize)
		}
		<-pace.C
	}
	slices.Sort(pauses)
	t.Logf("pause per checkpoint over %d: median %v, min %v, max %v", len(pauses), pauses[len(pauses)/2], pauses[0], pauses[len(pauses)-1])
	require.NoError(t, os.WriteFile(filepath.Join(r.share, "ckptdone"), nil, 0o644))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := os.Stat(filepath.Join(r.share, "changed"))
		assert.NoError(c, err)
	}, 2*time.Minute, 50*time.Millisecond, "the guest changes the share after the checkpoint; console:\n%s", r.m.Serial())

	victim := r.live()
	killTree(t, victim.cmd.Process.Pid)
	require.Eventually(t, func() bool { return r.front.Status().Recoveries == 1 }, time.Minute, 10*time.Millisecond, "the front recovers")
	t.Logf("recovery: %+v", r.front.Status().LastRecovery)
	require.NoError(t, os.WriteFile(filepath.Join(r.share, "recovered"), nil, 0o644))

	res, err := r.m.Wait()
	require.NoError(t, err, "the guest finishes\n%s", r.live().stderr())
	for _, k := range []string{"held_fd", "known_fd_renamed_after", "renamed", "known", "after", "post_fd_opened_after", "other1_fd", "after_again", "new_file", "after_forget"} {
		t.Logf("guest after the restore: %s = %q", k, res.Values[k])
	}
	assert.Equal(t, "0", res.Values["hangs"], "no guest operation hangs:\n%s", res.Serial)
	assert.Equal(t, "answers", res.Values["after_forget"], "virtiofsd survives FORGETs of inodes the checkpoint does not know\n%s", r.live().stderr())
	last := r.live()
	<-r.ran
	t.Logf("the restored virtiofsd's log:\n%s", last.stderr())
}
