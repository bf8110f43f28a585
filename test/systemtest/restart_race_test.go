package systemtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// restartRounds is how many socket restarts each leg and variant gets.
const restartRounds = 50

// TestSocketRestartsRacingClientsNeverStrandTheInstance restarts the
// socket again and again while a client (a VM) connects and leaves at
// random offsets around the restart: before it, during it, while its start
// is deferred, while the session ends. Whatever the interleaving, once the
// client has left the socket listens again, no marker is left behind, and
// the next client is served. With STANDBY=yes too, where a virtiofsd
// always waits on the socket. The seed is logged; what happened to each
// round's client (served, refused while the socket was down, reset) is
// counted, not asserted: a VM that connects as the admin restarts its
// socket may be refused, but the instance must never be left dead.
func TestSocketRestartsRacingClientsNeverStrandTheInstance(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		for _, standby := range []bool{false, true} {
			name := "plain"
			if standby {
				name = "standby"
			}
			t.Run(name, func(t *testing.T) { testSocketRestartsRacingClients(t, leg, standby) })
		}
	})
}

func testSocketRestartsRacingClients(t *testing.T, leg shimbox.Platform, standby bool) {
	b := box(t, leg)
	const inst = "rr"
	var extra []string
	if standby {
		extra = append(extra, "STANDBY=yes")
	}
	_, err := b.AddInstance(inst, extra...)
	require.NoError(t, err)
	// A socket unit may start 5 times in 10 s by default and trigger its
	// service 60 times (the shipped TriggerLimitBurst=), and the shipped
	// service may start 30 times. This test restarts the socket 50 times,
	// each as soon as the last round has settled, and each round starts
	// the service two or three times (the racing client, the next client,
	// a standby): far faster than any admin or VM. What it checks is each
	// restart's outcome, not the limits, which the start-limit tests
	// cover; on a fast machine the limits would end the run instead (CI
	// once hit the service's at round 31).
	limits := map[string]string{
		"socket":  "[Unit]\nStartLimitIntervalSec=10s\nStartLimitBurst=1000\n[Socket]\nTriggerLimitIntervalSec=10s\nTriggerLimitBurst=1000\n",
		"service": "[Unit]\nStartLimitIntervalSec=10s\nStartLimitBurst=1000\n",
	}
	for unit, conf := range limits {
		require.NoError(t, b.WriteFile("/run/systemd/system/virtiofsd@"+inst+"."+unit+".d/50-test-limits.conf", []byte(conf), 0o644))
	}
	systemctl(t, b, "daemon-reload")
	enable(t, b, inst)
	socket, service := "virtiofsd@"+inst+".socket", "virtiofsd@"+inst+".service"
	settle(t, b, inst, standby)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	outcomes := map[string]int{}
	passed := 0
	for round := 1; round <= restartRounds; round++ {
		// The client connects at a random offset and stays a random
		// time; the restart comes at another random offset. Every other
		// round the client comes first and stays long, so that many
		// restarts meet a session being served.
		connectAt := time.Duration(rng.IntN(300)) * time.Millisecond
		stay := time.Duration(rng.IntN(400)) * time.Millisecond
		restartAt := time.Duration(rng.IntN(300)) * time.Millisecond
		if round%2 == 0 {
			connectAt, stay, restartAt = 0, 300*time.Millisecond+stay, 50*time.Millisecond+restartAt
		}
		outcome, restartOut, restartErr := raceOnce(b, inst, connectAt, stay, restartAt)
		outcomes[outcome]++
		ok := assert.NoError(t, restartErr, "round %d: systemctl restart: %s", round, restartOut)
		// Once the client has left: the socket listens again, with no
		// marker left, and serves the next client.
		ok = ok && assert.EventuallyWithT(t, func(c *assert.CollectT) {
			active, err := unitprop.Property(context.Background(), b, socket, "ActiveState")
			assert.NoError(c, err)
			assert.Equal(c, "active", active, "the socket listens again")
			_, err = os.Stat(b.Path(shimstate.MarkerPath("/run", inst)))
			assert.ErrorIs(c, err, os.ErrNotExist, "no deferred-restart marker is left")
		}, waitFor, 50*time.Millisecond, "round %d (client %s, connect at %v for %v, restart at %v)", round, outcome, connectAt, stay, restartAt)
		if ok {
			next, err := vhostuser.Probe(b.Socket(inst), dialTimeout)
			ok = assert.NoError(t, err, "round %d: the next client is not served", round)
			if err == nil {
				next.Close()
			}
		}
		ok = ok && settle(t, b, inst, standby)
		if !ok {
			t.Logf("round %d failed\n%s\n%s", round, status(b, socket), status(b, service))
			break
		}
		passed++
	}
	t.Logf("%s, standby=%v: %d/%d rounds passed; clients: %v", leg, standby, passed, restartRounds, outcomes)
	assert.Equal(t, restartRounds, passed)
	deferred := 0
	for _, e := range journal(t, b, "-u", service) {
		if strings.Contains(e["MESSAGE"], "this session goes on until the VM disconnects") {
			deferred++
		}
	}
	t.Logf("restarts that met a served session: %d", deferred)
}

// raceOnce runs one round: a client connects at connectAt and stays for
// stay, while the socket is restarted at restartAt (both from now). It
// returns what happened to the client, and systemctl's output and error.
func raceOnce(b *shimbox.Box, inst string, connectAt, stay, restartAt time.Duration) (outcome, restartOut string, restartErr error) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		time.Sleep(connectAt)
		outcome = racingClient(b.Socket(inst), stay)
	}()
	go func() {
		defer wg.Done()
		time.Sleep(restartAt)
		restartOut, restartErr = b.Systemctl(context.Background(), "restart", "virtiofsd@"+inst+".socket")
	}()
	wg.Wait()
	return outcome, restartOut, restartErr
}

// racingClient connects like a VM, waits for its first reply, stays, and leaves.
// It says how that went.
func racingClient(path string, stay time.Duration) string {
	c, err := vhostuser.Probe(path, dialTimeout)
	switch {
	case errors.Is(err, os.ErrNotExist), isRefused(err):
		return "refused (the socket was down)"
	case err != nil:
		return "not answered (" + shortErr(err) + ")"
	}
	time.Sleep(stay)
	if err := vhostuser.GetFeatures(c, dialTimeout); err != nil {
		c.Close()
		return "cut while served"
	}
	c.Close()
	return "served"
}

func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "connection refused")
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// settle waits until the instance is at rest between clients: its service
// inactive, or with STANDBY=yes a standby virtiofsd waiting on the socket.
func settle(t *testing.T, b *shimbox.Box, inst string, standby bool) bool {
	t.Helper()
	service := "virtiofsd@" + inst + ".service"
	return assert.EventuallyWithT(t, func(c *assert.CollectT) {
		active, err := unitprop.Property(context.Background(), b, service, "ActiveState")
		assert.NoError(c, err)
		if !standby {
			assert.Contains(c, []string{"inactive", "failed"}, active)
			assert.NotEqual(c, "failed", active, "the session failed")
			return
		}
		st, err := b.LiveState(context.Background(), inst)
		assert.NoError(c, err)
		if assert.NotNil(c, st, "no standby shim runs") {
			assert.Equal(c, shimstate.Waiting, st.Phase, fmt.Sprintf("%+v", st))
			assert.True(c, st.Standby)
		}
	}, waitFor, 50*time.Millisecond, "%s never settled", inst)
}

// TestDisablingASocketWhoseRestartIsDeferredKeepsItStopped is the issue's
// reproduction: a session open, the socket restarted (its start deferred),
// then disabled with --now. Once the VM has left, the socket stays
// stopped: the admin's last word wins.
func TestDisablingASocketWhoseRestartIsDeferredKeepsItStopped(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		b := box(t, leg)
		_, err := b.AddInstance("r1")
		require.NoError(t, err)
		enable(t, b, "r1")
		vm := servedAndActive(t, b, "r1", dialTimeout)
		defer vm.Close()
		systemctl(t, b, "restart", "virtiofsd@r1.socket")
		d, err := b.Deferred("r1")
		require.NoError(t, err)
		require.NotNil(t, d, "the restart is deferred")
		assert.Equal(t, "enabled", d.UnitFileState)
		out := run(t, b, shimbox.BinaryPath, "list", "r1")
		assert.Contains(t, out, "(restart deferred)")

		systemctl(t, b, "disable", "--now", "virtiofsd@r1.socket")
		require.NoError(t, vhostuser.GetFeatures(vm, dialTimeout), "the session still answers")
		require.NoError(t, vm.Close())
		waitState(t, b, "virtiofsd@r1.service", "inactive/dead")
		assert.Equal(t, "success", show(t, b, "virtiofsd@r1.service", "Result")["Result"])
		assert.Equal(t, "inactive/dead", state(t, b, "virtiofsd@r1.socket"), "a disabled socket stays stopped")
		d, err = b.Deferred("r1")
		require.NoError(t, err)
		assert.Nil(t, d, "the deferral is over")
		waitJournal(t, b, "stays stopped", "-u", "virtiofsd@r1.service")
	})
}
