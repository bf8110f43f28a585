package virtiofsd

import (
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
)

// A timestamp of the right length but the wrong shape (a letter for a
// digit, another separator) is not the one virtiofsd writes: the Rust
// line is logged whole, and the C one without its prefix, and neither is
// an event.
func TestTimestampOfTheRightLengthButTheWrongShapeIsNoEvent(t *testing.T) {
	for _, stamp := range []string{
		"2024-07-08T03:39:4xZ", "x024-07-08T03:39:41Z", "2024/07/08T03:39:41Z",
		"2024-07-08T03-39-41Z", "2024-07-08T03:39:41:", "2024-07-08X03:39:41Z",
		"2024-07-08T03:39:/1Z", "2024-07-08T03:39::1Z",
	} {
		raw := "[" + stamp + " INFO  virtiofsd] Client connected, servicing requests"
		assert.Equal(t, Line{raw, journal.PriInfo, NoEvent}, Classify(Rust, raw), raw)
	}
	for _, stamp := range []string{
		"2024-07-08 03:39:41.12345x", "2024-07-08 03:39:41 123456", "2024-07-08T03:39:41.123456",
		"2024-07-08 03:39:41./23456", "2024-07-08 03:39:41.:23456",
	} {
		raw := "[" + stamp + "+0000] [ID: 00000042] virtio_session_mount: Received vhost-user socket connection"
		assert.Equal(t, Line{"virtio_session_mount: Received vhost-user socket connection", journal.PriDebug, NoEvent}, Classify(C, raw), raw)
	}
	for _, zone := range []string{"+00x0", "*0000", "+000", "+0000x"} {
		raw := "[2024-07-08 03:39:41.123456" + zone + "] [ID: 00000042] virtio_session_mount: Received vhost-user socket connection"
		assert.Equal(t, NoEvent, Classify(C, raw).Event, raw)
	}
}

// The exact stamps, with every digit, still are events: the shape check
// does not refuse what virtiofsd writes.
func TestEveryDigitIsAcceptedInTheTimestamps(t *testing.T) {
	for _, stamp := range []string{"0123-45-67T89:01:23Z", "9999-99-99T99:99:99Z"} {
		raw := "[" + stamp + " INFO  virtiofsd] Client connected, servicing requests"
		assert.Equal(t, Connected, Classify(Rust, raw).Event, raw)
	}
	for _, stamp := range []string{"0123-45-67 89:01:23.456789-9876", "9999-99-99 99:99:99.999999+0000"} {
		raw := "[" + stamp + "] [ID: 00000000] virtio_session_mount: Received vhost-user socket connection"
		assert.Equal(t, Connected, Classify(C, raw).Event, raw)
	}
}

// A line in brackets whose first field is not a timestamp (a guest's
// name, a module's own prefix) is not the Rust one's prefix: it is logged
// whole, at the level its words say, and is no event.
func TestBracketedLineWhoseFirstFieldIsNoTimestampIsLoggedWhole(t *testing.T) {
	for raw, level := range map[string]journal.Priority{
		"[INFO  virtiofsd] Client connected, servicing requests": journal.PriInfo,
		"[virtiofsd ERROR x] failed":                             journal.PriErr,
		"[2024-07-08T03:39:41 INFO  virtiofsd] x":                journal.PriInfo,
		"[2024-07-08Z INFO  virtiofsd] x":                        journal.PriInfo,
		"[2024-07-08T03:39:41Z] warning":                         journal.PriWarning,
		"[2024-07-08T03:39:41Z NOTICE virtiofsd] x":              journal.PriInfo,
		"[2024-07-08T03:39:41Z INFO  virtiofsd":                  journal.PriInfo,
		"[2024-07-08T03:39:41Z WARN  virtiofsd]":                 journal.PriWarning,
	} {
		assert.Equal(t, Line{raw, level, NoEvent}, Classify(Rust, raw), raw)
	}
}

// A bare hexadecimal number is not the C one's hang-up line: only its
// session loop's own text before the revents makes one.
func TestBareReventsWithoutTheLoopsTextIsNoHangUp(t *testing.T) {
	for _, raw := range []string{"11", "19", "1f"} {
		assert.Equal(t, NoEvent, Classify(C, raw).Event, raw)
	}
}

// A line longer than the lower-casing buffer is read for its level all
// the same: an upper-case ERROR in it is an error.
func TestALongLineKeepsItsLevel(t *testing.T) {
	raw := "fuse: ERROR " + strings.Repeat("x", 600)
	assert.Equal(t, journal.PriErr, Classify(C, raw).Priority)
	assert.Equal(t, journal.PriWarning, Classify(Rust, "WARNING "+strings.Repeat("y", 600)).Priority)
}
