package systemtest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// A STOP_TIMEOUT longer than the unit's TimeoutStopSec= is honoured: the
// shim tells systemd (EXTEND_TIMEOUT_USEC) and ends virtiofsd itself,
// instead of systemd killing the shim half-way through its grace period.
func TestStopTimeoutLongerThanTheUnitsIsTheShimsToEnforce(t *testing.T) {
	shimbox.Legs(t, testStopTimeoutLongerThanTheUnitsIsTheShimsToEnforce)
}

func testStopTimeoutLongerThanTheUnitsIsTheShimsToEnforce(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	const stubborn = "/etc/virtiofsd/stubborn-virtiofsd"
	require.NoError(t, b.WriteFile(stubborn, []byte("#!/bin/sh\n"+
		"trap '' TERM\n"+
		"echo 'virtio_session_mount: Waiting for vhost-user socket connection...' >&2\n"+
		"while :; do sleep 1; done\n"), 0o755))
	require.NoError(t, b.WriteFile("/etc/systemd/system/virtiofsd@slow.service.d/short-stop.conf",
		[]byte("[Service]\nTimeoutStopSec=1s\n"), 0o644))
	systemctl(t, b, "daemon-reload")
	_, err := b.AddInstance("slow", "VIRTIOFSD="+stubborn, "FLAVOR=c", "STOP_TIMEOUT=3s")
	require.NoError(t, err)
	enable(t, b, "slow")
	systemctl(t, b, "start", "virtiofsd@slow.service")
	waitState(t, b, "virtiofsd@slow.service", "active/running")

	systemctl(t, b, "stop", "virtiofsd@slow.service") // returns once it is stopped
	p := show(t, b, "virtiofsd@slow.service", "Result", "ExecMainStatus", "ActiveState")
	assert.Equal(t, "exit-code", p["Result"], "not timeout: systemd waited for the shim\n%s", status(b, "virtiofsd@slow.service"))
	assert.Equal(t, "137", p["ExecMainStatus"], "the shim's own SIGKILL after STOP_TIMEOUT")
	waitJournal(t, b, "virtiofsd ignored SIGTERM, killing it", "-u", "virtiofsd@slow.service")
	assert.Empty(t, virtiofsdProcesses(t, b))
}
