package systemtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// crashRounds is how many times the guest's virtiofsd is killed per boot.
const crashRounds = 3

// TestAVirtiofsdKilledUnderTheGuestIsReplacedAndTheShareComesBackAfterARemount
// boots a real guest on the Debian 13 leg (Rust virtiofsd, shipped units)
// that holds nothing open on its share; the host kills its virtiofsd
// (SIGKILL) several times. Each time the VM keeps running, no guest
// operation hangs (each bounded by timeout 10), the state says degraded,
// and after umount and mount the share works again.
func TestAVirtiofsdKilledUnderTheGuestIsReplacedAndTheShareComesBackAfterARemount(t *testing.T) {
	b, qemu, dir, statePath := guestInstance(t, shimbox.Debian13)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)

	// The host's side: at each round the guest announces, kill virtiofsd
	// and wait for the session to be degraded once more.
	killed := make(chan []string, 1)
	go func() {
		var log []string
		defer func() { killed <- log }()
		for round := 1; round <= crashRounds; round++ {
			if !pollUntil(ctx, func() bool {
				got, _ := os.ReadFile(filepath.Join(dir, "ready"))
				return strings.TrimSpace(string(got)) == strconv.Itoa(round)
			}) {
				log = append(log, "round "+strconv.Itoa(round)+": the guest never announced it")
				return
			}
			st, err := shimstate.Read(statePath)
			if err != nil || st == nil || st.VirtiofsdPID == 0 {
				log = append(log, "round "+strconv.Itoa(round)+": no virtiofsd in the state")
				return
			}
			if _, err := b.Run(ctx, "kill", "-9", strconv.Itoa(st.VirtiofsdPID)); err != nil {
				log = append(log, "kill: "+err.Error())
				return
			}
			if !pollUntil(ctx, func() bool {
				st, _ := shimstate.Read(statePath)
				return st != nil && st.Degraded != nil && st.Degraded.Recoveries == round
			}) {
				log = append(log, "round "+strconv.Itoa(round)+": the session never said degraded")
				return
			}
			// Tell the guest the crash happened: a file it reads after
			// its remount.
			_ = os.WriteFile(filepath.Join(dir, "killed"), []byte(strconv.Itoa(round)+"\n"), 0o644)
			log = append(log, "round "+strconv.Itoa(round)+": killed "+strconv.Itoa(st.VirtiofsdPID))
		}
	}()

	res, err := guest.Run(ctx, img, guest.Spec{
		QEMU:    qemu,
		Timeout: 3 * time.Minute,
		Shares:  []guest.Share{{Tag: "x", Socket: b.Socket("x")}},
		Script: `mount -t virtiofs x /mnt/x || exit 1
t() { timeout 10 "$@"; }
for round in $(seq 1 ` + strconv.Itoa(crashRounds) + `); do
	echo $round >/mnt/x/ready
	# Until the crash is recovered, reads work; after it they fail (EBADF).
	i=0
	while t cat /mnt/x/hello >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
	t stat /mnt/x/hello >/dev/null 2>&1; echo "RESULT stat_$round=$?"
	cd /
	t umount /mnt/x; echo "RESULT umount_$round=$?"
	t mount -t virtiofs x /mnt/x; echo "RESULT mount_$round=$?"
	# The host wrote "killed" once the state said degraded.
	j=0
	while [ "$(t cat /mnt/x/killed 2>/dev/null)" != "$round" ] && [ $j -lt 100 ]; do sleep 0.1; j=$((j+1)); done
	echo "RESULT read_$round=$(t cat /mnt/x/hello)"
	echo "RESULT write_$round=$(t sh -c "echo round $round >/mnt/x/w$round && cat /mnt/x/w$round")"
done
echo "RESULT done=yes"
`,
	})
	hostLog := <-killed
	t.Log(strings.Join(hostLog, "\n"))
	if err != nil {
		t.Log(status(b, "virtiofsd@x.service"))
	}
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "yes", res.Values["done"], "the VM ran through every round\n%s", res.Serial)
	for round := 1; round <= crashRounds; round++ {
		r := strconv.Itoa(round)
		assert.NotEqual(t, "124", res.Values["stat_"+r], "round %s: a request on the share after the crash returned, it did not hang", r)
		assert.Equal(t, "0", res.Values["umount_"+r], "round %s", r)
		assert.Equal(t, "0", res.Values["mount_"+r], "round %s", r)
		assert.Equal(t, "hello", res.Values["read_"+r], "round %s: the share works after the remount", r)
		assert.Equal(t, "round "+r, res.Values["write_"+r], "round %s", r)
	}
	degraded := waitJournal(t, b, "degraded: virtiofsd crashed", "-u", "virtiofsd@x.service", "-p", "warning")
	assert.Contains(t, degraded["MESSAGE"], "umount and mount it again")
	// The guest powered off: the session ended cleanly, nothing left.
	waitState(t, b, "virtiofsd@x.service", "inactive/dead")
	assert.Equal(t, "active/listening", state(t, b, "virtiofsd@x.socket"))
}

// pollUntil polls ok every 50 ms until it holds or ctx ends.
func pollUntil(ctx context.Context, ok func() bool) bool {
	for !ok() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// guestInstance is a box of leg with instance x enabled, its share holding
// "hello", for a guest of the QEMU it returns: the share's folder and the
// instance's state file. On Debian 12 the instance runs Debian 13's Rust
// virtiofsd, so that it has the front.
func guestInstance(t *testing.T, leg shimbox.Platform) (b *shimbox.Box, qemu, dir, statePath string) {
	t.Helper()
	b = box(t, leg)
	qemu, err := leg.QEMU(t.Context())
	require.NoError(t, err)
	if qemu == "" {
		if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			t.Fatalf("qemu-system-x86_64 not installed: run make test (scripts/deps.sh) or apt-get install qemu-system-x86: %v", err)
		}
	}
	var extra []string
	if !leg.Rust() {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		tree, err := distro.Debian13(ctx)
		require.NoError(t, err, "the Debian 13 tree, for its Rust virtiofsd")
		rust, err := tree.RustVirtiofsd()
		require.NoError(t, err)
		extra = append(extra, "VIRTIOFSD="+rust)
	}
	dir, err = b.AddInstance("x", extra...)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello"), []byte("hello\n"), 0o644))
	enable(t, b, "x")
	return b, qemu, dir, shimstate.Path(b.Path("/run"), "x")
}
