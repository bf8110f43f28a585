package systemtest

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// servedWithin is how soon, by the requirement, a connection made
// after virtiofsd was killed must be served.
const servedWithin = 2 * time.Second

// waitHangUp waits until the other end closes c.
func waitHangUp(t *testing.T, c net.Conn) {
	t.Helper()
	waitHangUpWithin(t, c, waitFor)
}

// waitHangUpWithin waits at most d until the other end closes c.
func waitHangUpWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the session was not closed within %s", d)
}

func TestStoppingTheServiceDuringASessionEndsItCleanly(t *testing.T) {
	shimbox.Legs(t, testStoppingTheServiceDuringASessionEndsItCleanly)
}

func testStoppingTheServiceDuringASessionEndsItCleanly(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	enable(t, b, "x")
	c := session(t, b, "x")
	virtiofsdPID(t, b, "x")

	systemctl(t, b, "stop", "virtiofsd@x.service")
	p := show(t, b, "virtiofsd@x.service", "ActiveState", "Result", "MainPID", "ExecMainStatus")
	assert.Equal(t, "inactive", p["ActiveState"])
	assert.Equal(t, "success", p["Result"])
	assert.Equal(t, "0", p["ExecMainStatus"])
	assert.Equal(t, "0", p["MainPID"])
	assert.Empty(t, virtiofsdProcesses(t, b))
	out, _ := b.Run(t.Context(), "pgrep", "-a", "-f", "virtiofsd-shim")
	assert.Empty(t, strings.TrimSpace(out))
	waitHangUp(t, c)
	// The socket stays: the next VM connection starts a new session.
	waitState(t, b, "virtiofsd@x.socket", "active/listening")
	session(t, b, "x")
}

func TestKilledVirtiofsdDoesNotStrandTheSocket(t *testing.T) {
	shimbox.Legs(t, testKilledVirtiofsdDoesNotStrandTheSocket)
}

func testKilledVirtiofsdDoesNotStrandTheSocket(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	enable(t, b, "x")
	c := session(t, b, "x")

	run(t, b, "kill", "-9", strconv.Itoa(virtiofsdPID(t, b, "x")))
	waitHangUp(t, c)
	// The shim reports the signal: 128+9.
	waitState(t, b, "virtiofsd@x.service", "failed/failed")
	p := show(t, b, "virtiofsd@x.service", "Result", "ExecMainStatus")
	assert.Equal(t, "exit-code", p["Result"])
	assert.Equal(t, "137", p["ExecMainStatus"])
	waitJournal(t, b, "signal", "-u", "virtiofsd@x.service", "SYSLOG_IDENTIFIER=virtiofsd-shim")

	c2, err := b.Dial("x", servedWithin)
	require.NoError(t, err, "the next connection was not served within %s\n%s", servedWithin, status(b, "virtiofsd@x.service"))
	defer c2.Close()
	assert.Equal(t, "active/running", state(t, b, "virtiofsd@x.service"))
}

// TestTenQuickSessionsAreAllServed is a VM rebooting in a loop: ten
// sessions, one after the other as fast as they are served, must all be
// served, and leave neither the service nor the socket failed.
func TestTenQuickSessionsAreAllServed(t *testing.T) {
	shimbox.Legs(t, testTenQuickSessionsAreAllServed)
}

func testTenQuickSessionsAreAllServed(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	enable(t, b, "x")
	for i := 1; i <= 10; i++ {
		c, err := b.Dial("x", dialTimeout)
		require.NoError(t, err, "session %d\n%s", i, status(b, "virtiofsd@x.service"))
		require.NoError(t, c.Close())
	}
	waitState(t, b, "virtiofsd@x.service", "inactive/dead")
	assert.Equal(t, "success", show(t, b, "virtiofsd@x.service", "Result")["Result"])
	waitState(t, b, "virtiofsd@x.socket", "active/listening")
	assert.Equal(t, "success", show(t, b, "virtiofsd@x.socket", "Result")["Result"])
	var served int
	for _, m := range shimbox.Messages(journal(t, b, "VIRTIOFSD_INSTANCE=x", "SYSLOG_IDENTIFIER=virtiofsd")) {
		if m == leg.ConnectedLine() {
			served++
		}
	}
	assert.Equal(t, 10, served, "sessions virtiofsd reported")
}

// TestServiceThatCannotStartStopsAtTheStartLimit: with its shared directory
// missing, the service fails at once, naming the cause. The connection that
// started it is still pending, so the socket starts the service again and
// again: the start limit (StartLimitBurst= starts in StartLimitIntervalSec=)
// ends that loop; the service and the socket are then failed, the socket no
// longer listens and the VM sees its connection closed. Fixing the cause and
// reset-failed bring the instance back.
func TestServiceThatCannotStartStopsAtTheStartLimit(t *testing.T) {
	shimbox.Legs(t, testServiceThatCannotStartStopsAtTheStartLimit)
}

func testServiceThatCannotStartStopsAtTheStartLimit(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	missing := failToTheStartLimit(t, b, "")
	p := show(t, b, "virtiofsd@x.service", "ActiveState", "Result", "ExecMainStatus", "StartLimitBurst")
	assert.Equal(t, "failed", p["ActiveState"])
	// systemd 252 keeps the last start's result (exit-code) and logs the
	// refusal.
	waitJournal(t, b, "Start request repeated too quickly", "-u", "virtiofsd@x.service")
	assert.Equal(t, "78", p["ExecMainStatus"])
	_, err := os.Stat(b.Socket("x"))
	assert.ErrorIs(t, err, os.ErrNotExist, "the failed socket's file is removed")

	// Each start failed and said why; exactly StartLimitBurst of them ran.
	var starts, reasons int
	for _, e := range journal(t, b, "-u", "virtiofsd@x.service") {
		m := e["MESSAGE"]
		if e["SYSLOG_IDENTIFIER"] == "systemd" && strings.HasPrefix(m, "Starting virtiofsd@x.service") {
			starts++
		}
		if strings.Contains(m, "SHARED_DIR "+missing+" does not exist") {
			reasons++
		}
	}
	assert.Equal(t, p["StartLimitBurst"], strconv.Itoa(starts), "starts")
	assert.Equal(t, starts, reasons, "starts whose failure named the missing directory")

	fixStartLimit(t, b, missing)
	session(t, b, "x")
}
