package e2etest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/demoguest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestStandbyGuestBootedTwiceGetsTwoVirtiofsds: with STANDBY=yes a
// virtiofsd waits before the first boot, each boot is served by its own
// virtiofsd (its own VIRTIOFSD_SESSION in the journal), and the next one
// waits after each.
func TestStandbyGuestBootedTwiceGetsTwoVirtiofsds(t *testing.T) {
	shimbox.Legs(t, testStandbyGuestBootedTwiceGetsTwoVirtiofsds)
}

func testStandbyGuestBootedTwiceGetsTwoVirtiofsds(t *testing.T, leg shimbox.Platform) {
	requireGuest(t, leg)
	b := shimbox.New(t, shimbox.Options{Name: "e2e", Platform: leg})
	share, err := b.AddInstance("vm1", "CACHE=auto", "STANDBY=yes")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(share, demoguest.HostFile), []byte("hello from the host\n"), 0o644))
	ctx := context.Background()
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", "virtiofsd@vm1.socket"}} {
		out, err := b.Systemctl(ctx, args...)
		require.NoError(t, err, out)
	}
	waitStandby := func(session int) {
		t.Helper()
		ok := assert.EventuallyWithT(t, func(c *assert.CollectT) {
			st, err := b.LiveState(ctx, "vm1")
			if !assert.NoError(c, err) || !assert.NotNil(c, st, "no running shim has published its state") {
				return
			}
			assert.Equal(c, state.Waiting, st.Phase)
			assert.Equal(c, "standby", st.Client())
			assert.Equal(c, session, st.SessionNumber)
		}, 20*time.Second, 20*time.Millisecond)
		if !ok {
			t.Fatalf("no standby for session %d", session)
		}
	}
	waitStandby(1) // before any guest

	for boot := 1; boot <= 2; boot++ {
		res, err := demoguest.Boot(ctx, b, "vm1", nil)
		require.NoError(t, err, "boot %d", boot)
		assert.Equal(t, "hello from the host", res.Values["read"], "boot %d", boot)
		assert.Equal(t, demoguest.GuestFile, res.Values["wrote"], "boot %d", boot)
		waitStandby(boot + 1)
	}

	entries, err := b.Journal(ctx, "-u", "virtiofsd@vm1.service", "SYSLOG_IDENTIFIER=virtiofsd")
	require.NoError(t, err)
	pidOf := map[string]string{} // session -> virtiofsd pid, of the sessions a guest connected to
	for _, e := range entries {
		if strings.Contains(e["MESSAGE"], leg.ConnectedLine()) {
			require.NotEmpty(t, e["VIRTIOFSD_SESSION"], "%v", e)
			pidOf[e["VIRTIOFSD_SESSION"]] = e["VIRTIOFSD_PID"]
		}
	}
	require.Len(t, pidOf, 2, "two boots, two sessions: %v", pidOf)
	pids := map[string]bool{}
	for _, pid := range pidOf {
		pids[pid] = true
	}
	assert.Len(t, pids, 2, "each session its own virtiofsd: %v", pidOf)
	// One service run served both, and never restarted.
	assert.Equal(t, "0", show(t, b, "virtiofsd@vm1.service", "NRestarts"))
	assert.Equal(t, "active", show(t, b, "virtiofsd@vm1.service", "ActiveState"))
}
