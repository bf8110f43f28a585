package launch

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
)

// A destination whose virtiofsd cannot load the incoming state exits 0
// once QEMU hangs up; the session still ends failed, with its own exit
// status and the reason in STATUS=.
func TestFailedIncomingMigrationEndsTheSessionFailed(t *testing.T) {
	s := start(t, virtiofsd.Rust, fakevirtiofsd.MigrationLoadFails)
	s.run(t)
	assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Starting"))
	assert.True(t, strings.HasPrefix(s.notify.next(t), "READY=1\n"))
	c := probe(t, s.sock)
	assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Serving a vhost-user client"))
	assert.Equal(t, "STATUS=Incoming migration failed: "+fakevirtiofsd.MigrationLoadFailure+"; the VM did not arrive on "+s.sock+
		" (virtiofsd pid "+itoa(s.lines.pid())+")", s.notify.next(t))
	c.Close()
	err := s.wait(t)
	var me *MigrationError
	require.True(t, errors.As(err, &me), "%v", err)
	assert.True(t, me.Incoming)
	assert.Equal(t, exitcode.Migration, exitcode.For(err))
	assert.Contains(t, err.Error(), "incoming live migration failed")
	assert.Contains(t, err.Error(), fakevirtiofsd.MigrationLoadFailure)
}

func TestFailedOutgoingMigrationEndsTheSessionFailed(t *testing.T) {
	s := start(t, virtiofsd.Rust, fakevirtiofsd.MigrationSaveFails)
	s.run(t)
	s.notify.next(t)
	s.notify.next(t)
	c := probe(t, s.sock)
	s.notify.next(t)
	assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Outgoing migration failed: "+fakevirtiofsd.MigrationSaveFailure))
	c.Close()
	err := s.wait(t)
	var me *MigrationError
	require.True(t, errors.As(err, &me), "%v", err)
	assert.False(t, me.Incoming)
	assert.Equal(t, exitcode.Migration, exitcode.For(err))
}

// Only virtiofsd's exact line, at error level, from its vhost_user module,
// is the event; the same words elsewhere are not.
func TestMigrationFailureIsOnlyVirtiofsdsOwnLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want virtiofsd.Event
	}{
		{"[2026-12-02T10:00:00Z ERROR virtiofsd::vhost_user] " + fakevirtiofsd.MigrationLoadFailure, virtiofsd.MigrationLoadFailed},
		{"[2026-12-02T10:00:00Z ERROR virtiofsd::vhost_user] " + fakevirtiofsd.MigrationSaveFailure, virtiofsd.MigrationSaveFailed},
		{"[2026-12-02T10:00:00Z WARN  virtiofsd::vhost_user] " + fakevirtiofsd.MigrationLoadFailure, virtiofsd.NoEvent},
		{"[2026-12-02T10:00:00Z ERROR virtiofsd::passthrough] " + fakevirtiofsd.MigrationLoadFailure, virtiofsd.NoEvent},
		{"[2026-12-02T10:00:00Z INFO  virtiofsd] file Migration failed: Failed to load state: x", virtiofsd.NoEvent},
		{fakevirtiofsd.MigrationLoadFailure, virtiofsd.NoEvent}, // a bare line is no event
	} {
		assert.Equal(t, tc.want, virtiofsd.Classify(virtiofsd.Rust, tc.line).Event, tc.line)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
