package service

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// notifySocket pretends to be systemd: NOTIFY_SOCKET points at it, and the
// test reads what the shim sent.
func notifySocket(t *testing.T) <-chan vhostuser.Datagram {
	t.Helper()
	n, err := vhostuser.ListenNotify(filepath.Join(t.TempDir(), "notify"))
	require.NoError(t, err)
	t.Setenv("NOTIFY_SOCKET", n.Path)
	t.Cleanup(func() { n.Close() })
	return n.C
}

func TestAfterAFailureTheUnitsStatusSaysWhatFailedInsteadOfServing(t *testing.T) {
	ch := notifySocket(t)
	n := launch.SystemdNotifier{}
	require.NoError(t, n.Notify("STATUS=Serving a vhost-user client on /run/virtiofsd/vm1.sock, sharing /srv/vm1 (virtiofsd pid 815)"))
	cause := fmt.Errorf("virtiofsd (pid 815) was killed by signal 9 while serving\nits last line: %w", errors.New("Client connected"))
	NotifyFailure(n, cause)

	var last string
	for range 2 {
		select {
		case d := <-ch:
			last = d.State
		case <-time.After(10 * time.Second):
			t.Fatal("no datagram on NOTIFY_SOCKET within 10s")
		}
	}
	assert.Equal(t, "STATUS=Failed: virtiofsd (pid 815) was killed by signal 9 while serving; its last line: Client connected", last,
		"the last status names the failure, on one line")
}

func TestACleanEndLeavesTheLastStatusAsItIs(t *testing.T) {
	ch := notifySocket(t)
	NotifyFailure(launch.SystemdNotifier{}, nil)
	require.NoError(t, launch.SystemdNotifier{}.Notify("STATUS=marker"))
	select {
	case d := <-ch:
		assert.Equal(t, "STATUS=marker", d.State, "nothing was sent before the marker")
	case <-time.After(10 * time.Second):
		t.Fatal("no datagram on NOTIFY_SOCKET within 10s")
	}
}
