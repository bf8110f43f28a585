package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// sessionView is what systemd and `list` say of an instance: the fields a
// guest's files must never change.
type sessionView struct {
	Service      string // ActiveState/SubState of virtiofsd@NAME.service
	Phase        string // the running shim's published phase (internal/state), "" when none runs
	Socket       string // ActiveState/SubState of virtiofsd@NAME.socket
	ListService  string // the service's active/sub state as `list --json` shows it
	ListPID      int    // virtiofsd's pid as `list --json` shows it; 0: none
	ListHasState bool   // `list --json` shows the service at all
}

// viewOf reads the instance's view, failing the test when it cannot.
func viewOf(t *testing.T, b *shimbox.Box, instance string) sessionView {
	t.Helper()
	v, err := readView(b, instance)
	require.NoError(t, err)
	return v
}

// readView reads the instance's view. The phase comes from the typed
// state the running shim publishes, never from STATUS=.
func readView(b *shimbox.Box, instance string) (sessionView, error) {
	unit := "virtiofsd@" + instance
	var v sessionView
	props := map[string]string{}
	for _, p := range []struct{ unit, prop string }{
		{unit + ".service", "ActiveState"}, {unit + ".service", "SubState"},
		{unit + ".socket", "ActiveState"}, {unit + ".socket", "SubState"},
	} {
		val, err := unitprop.Property(context.Background(), b, p.unit, p.prop)
		if err != nil {
			return v, err
		}
		props[p.unit+" "+p.prop] = val
	}
	v.Service = props[unit+".service ActiveState"] + "/" + props[unit+".service SubState"]
	st, err := b.LiveState(context.Background(), instance)
	if err != nil {
		return v, err
	}
	if st != nil {
		v.Phase = string(st.Phase)
	}
	v.Socket = props[unit+".socket ActiveState"] + "/" + props[unit+".socket SubState"]
	out, err := b.Run(context.Background(), shimbox.BinaryPath, "list", "--json")
	if err != nil {
		return v, err
	}
	var list struct {
		Instances []struct {
			Instance string `json:"instance"`
			Service  *struct {
				ActiveState  string `json:"active_state"`
				SubState     string `json:"sub_state"`
				VirtiofsdPID *int   `json:"virtiofsd_pid"`
			} `json:"service"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return v, fmt.Errorf("list --json: %w\n%s", err, out)
	}
	for _, in := range list.Instances {
		if in.Instance != instance || in.Service == nil {
			continue
		}
		v.ListHasState = true
		v.ListService = in.Service.ActiveState + "/" + in.Service.SubState
		if in.Service.VirtiofsdPID != nil {
			v.ListPID = *in.Service.VirtiofsdPID
		}
	}
	return v, nil
}

// servingPID waits until the instance's service shows a served session
// and returns its virtiofsd's pid in the box: the shim's child, as
// pgrep sees it (the journal may drop lines at LOG_LEVEL=debug).
func servingPID(t *testing.T, b *shimbox.Box, instance string) int {
	t.Helper()
	unit := "virtiofsd@" + instance + ".service"
	pid := 0
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		v, err := readView(b, instance)
		if !assert.NoError(c, err) || !assert.Equal(c, "serving", v.Phase) {
			return
		}
		shim, err := unitprop.Property(context.Background(), b, unit, "MainPID")
		if !assert.NoError(c, err) {
			return
		}
		out, err := b.Run(context.Background(), "pgrep", "-P", shim, "-x", "virtiofsd")
		if !assert.NoError(c, err, out) {
			return
		}
		pids := strings.Fields(out)
		if assert.Len(c, pids, 1, out) {
			pid, err = strconv.Atoi(pids[0])
			assert.NoError(c, err)
		}
	}, 60*time.Second, 100*time.Millisecond, "%s serving, with one virtiofsd", unit)
	return pid
}

// servingView is the view of an instance whose guest is being served by
// virtiofsd pid (in the box), its socket as given (its restart may be
// pending).
func servingView(pid int, socket string) sessionView {
	return sessionView{Service: "active/running", Phase: "serving", Socket: socket,
		ListService: "active/running", ListPID: pid, ListHasState: true}
}

// hostileNamesScript defines the shell function round, which creates,
// looks up (twice: lookup, then stat of a name that does not exist) and
// opens every file of fakevirtiofsd.HostileNames in the current folder,
// and prints how many worked.
func hostileNamesScript() string {
	var b strings.Builder
	b.WriteString("set --")
	for _, n := range fakevirtiofsd.HostileNames() {
		b.WriteString(" '" + n + "'") // the names hold no single quote; newlines stay in the quotes
	}
	b.WriteString(`
round() {
	ok=0
	for f in "$@"; do
		[ -e "$f" ] || echo hostile > "$f"
		[ -e "$f.none" ]
		ls -l "$f" > /dev/null && [ "$(cat "$f")" = hostile ] && ok=$((ok+1))
	done
	echo "$ok"
}
`)
	return b.String()
}

// TestGuestFileNamesLikeEventLinesChangeNothing: at LOG_LEVEL=debug, with
// no caching (so that every access is a lookup virtiofsd prints), a guest
// creates, looks up and opens files named like every event line of both
// flavors, alone and between newlines. The instance's state and `list`
// stay those of a served session, a socket restart is deferred until the
// guest leaves and then listens again, and a stop while such lookups go
// on ends the session cleanly, as without those files.
func TestGuestFileNamesLikeEventLinesChangeNothing(t *testing.T) {
	shimbox.Legs(t, testGuestFileNamesLikeEventLinesChangeNothing)
}

func testGuestFileNamesLikeEventLinesChangeNothing(t *testing.T, leg shimbox.Platform) {
	img := requireGuest(t, leg)
	b := shimbox.New(t, shimbox.Options{Name: "e2e", Platform: leg})
	share, err := b.AddInstance("vm1", "CACHE=never", "LOG_LEVEL=debug")
	require.NoError(t, err)
	out, err := b.Systemctl(context.Background(), "enable", "--now", "virtiofsd@vm1.socket")
	require.NoError(t, err, out)
	qemu, err := leg.QEMU(context.Background())
	require.NoError(t, err)
	names := len(fakevirtiofsd.HostileNames())
	exists := func(name string) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(share, name))
			return err == nil
		}
	}

	// A socket restart while the guest looks the names up.
	done := bootMounted(t, img, guest.Spec{
		QEMU:    qemu,
		Shares:  []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Timeout: 180 * time.Second,
		Script: hostileNamesScript() + `
mount -t virtiofs vm1 /mnt/vm1 || exit 1
cd /mnt/vm1
echo "RESULT first=$(round "$@")"
echo E2E_MOUNTED
n=0
while [ ! -e restarted ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
echo "RESULT second=$(round "$@")"
: > looked-up-again
n=0
while [ ! -e leave ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
cd /
umount /mnt/vm1
`,
	})
	pid := servingPID(t, b, "vm1")
	assert.Equal(t, servingView(pid, "active/running"), viewOf(t, b, "vm1"), "after the guest made and looked up the files")
	out, err = b.Systemctl(context.Background(), "restart", "virtiofsd@vm1.socket")
	require.NoError(t, err, out)
	// The socket's own state while its restart waits for the guest is the
	// release protocol's; the session's must not move.
	deferred := viewOf(t, b, "vm1").Socket
	require.NoError(t, os.WriteFile(filepath.Join(share, "restarted"), nil, 0o644))
	require.Eventually(t, exists("looked-up-again"), 120*time.Second, 50*time.Millisecond, "the guest's second round")
	assert.Equal(t, servingView(pid, deferred), viewOf(t, b, "vm1"), "after the socket's restart and the second round")
	require.NoError(t, os.WriteFile(filepath.Join(share, "leave"), nil, 0o644))
	o := <-done
	require.NoError(t, o.err)
	require.Equal(t, 0, o.res.ExitStatus, o.res.Serial)
	assert.Equal(t, strconv.Itoa(names), o.res.Values["first"], o.res.Serial)
	assert.Equal(t, strconv.Itoa(names), o.res.Values["second"], o.res.Serial)

	waitInactive(t, b, "vm1")
	assert.Equal(t, "success", show(t, b, "virtiofsd@vm1.service", "Result"))
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		v, err := readView(b, "vm1")
		if assert.NoError(c, err) {
			assert.Equal(c, "active/listening", v.Socket)
		}
	}, 30*time.Second, 50*time.Millisecond, "the restarted socket listens once the guest is gone")
	forged := forgedEvents(t, b, leg)
	t.Logf("%s: %d lines of virtiofsd's that read exactly as events came from the guest's names", leg, forged)
	if !leg.Rust() {
		// The C one prints every name it looks up at debug level; the Rust
		// one prints names only in migration warnings.
		assert.Positive(t, forged, "the guest's names reached virtiofsd's lines")
	}

	// A stop while the guest keeps looking the names up.
	done = bootMounted(t, img, guest.Spec{
		QEMU:    qemu,
		Shares:  []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Timeout: 180 * time.Second,
		Script: hostileNamesScript() + `
mount -t virtiofs vm1 /mnt/vm1 || exit 1
cd /mnt/vm1
echo "RESULT first=$(round "$@")"
# Lookups go on in the background until the share dies with the stop: a
# request to a stopped virtiofsd never returns, so the foreground only
# watches the loop's progress in /tmp, and ends when it stalls.
(
	i=0
	while :; do
		for f in "$@"; do ls -l "$f" > /dev/null || exit 1; i=$((i+1)); echo $i > /tmp/progress; done
	done
) &
echo E2E_MOUNTED
last=-1; still=0; n=0
while [ $n -lt 1200 ] && [ $still -lt 100 ]; do
	sleep 0.1; n=$((n+1))
	cur=$(cat /tmp/progress 2>/dev/null)
	if [ "$cur" = "$last" ]; then still=$((still+1)); else still=0; last=$cur; fi
done
echo "RESULT rounds=$last"
`,
	})
	pid = servingPID(t, b, "vm1")
	assert.Equal(t, servingView(pid, "active/running"), viewOf(t, b, "vm1"), "while the guest looks the names up")
	out, err = b.Systemctl(context.Background(), "stop", "virtiofsd@vm1.service")
	require.NoError(t, err, out)
	assert.Equal(t, "inactive", show(t, b, "virtiofsd@vm1.service", "ActiveState"))
	assert.Equal(t, "success", show(t, b, "virtiofsd@vm1.service", "Result"), "a stop while serving is a clean end")
	assert.Equal(t, "active/listening", viewOf(t, b, "vm1").Socket)
	o = <-done
	require.NoError(t, o.err)
	assert.Equal(t, strconv.Itoa(names), o.res.Values["first"], o.res.Serial)
}

// forgedEvents counts virtiofsd's lines in the instance's journal that read
// exactly as event lines beyond the three a session prints: the lines the
// guest's names started.
func forgedEvents(t *testing.T, b *shimbox.Box, leg shimbox.Platform) int {
	t.Helper()
	fl, err := virtiofsd.ParseFlavor(leg.Flavor())
	require.NoError(t, err)
	sessions, err := Sessions(context.Background(), b, "vm1")
	require.NoError(t, err)
	n := 0
	for _, s := range sessions {
		events := 0
		for _, e := range s.Entries {
			if e.Identifier == "virtiofsd" && virtiofsd.Classify(fl, e.Message).Event != virtiofsd.NoEvent {
				events++
			}
		}
		n += max(0, events-3)
	}
	return n
}
