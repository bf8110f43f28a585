package virtiofsd

import (
	"testing"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
)

// A timestamp of the right length but the wrong shape (a letter for a
// digit, another separator) is not the one virtiofsd writes: the line is
// still logged without its prefix, at its level, but it is no event.
func TestTimestampOfTheRightLengthButTheWrongShapeIsNoEvent(t *testing.T) {
	for _, stamp := range []string{
		"2024-07-08T03:39:4xZ", "x024-07-08T03:39:41Z", "2024/07/08T03:39:41Z",
		"2024-07-08T03-39-41Z", "2024-07-08T03:39:41:", "2024-07-08X03:39:41Z",
		"2024-07-08T03:39:/1Z", "2024-07-08T03:39::1Z",
	} {
		raw := "[" + stamp + " INFO  virtiofsd] Client connected, servicing requests"
		got := Classify(raw)
		assert.Equal(t, NoEvent, got.Event, raw)
	}
	for _, stamp := range []string{
		"2024-07-08 03:39:41.12345x", "2024-07-08 03:39:41 123456", "2024-07-08T03:39:41.123456",
		"2024-07-08 03:39:41./23456", "2024-07-08 03:39:41.:23456",
	} {
		raw := "[" + stamp + "+0000] [ID: 00000042] virtio_session_mount: Received vhost-user socket connection"
		got := Classify(raw)
		assert.Equal(t, Line{"virtio_session_mount: Received vhost-user socket connection", sdjournal.PriDebug, NoEvent}, got, raw)
	}
	for _, zone := range []string{"+00x0", "*0000", "+000", "+0000x"} {
		raw := "[2024-07-08 03:39:41.123456" + zone + "] [ID: 00000042] virtio_session_mount: Received vhost-user socket connection"
		assert.Equal(t, NoEvent, Classify(raw).Event, raw)
	}
}

// The exact stamps, with every digit, still are events: the shape check
// does not refuse what virtiofsd writes.
func TestEveryDigitIsAcceptedInTheTimestamps(t *testing.T) {
	for _, stamp := range []string{"0123-45-67T89:01:23Z", "9999-99-99T99:99:99Z"} {
		raw := "[" + stamp + " INFO  virtiofsd] Client connected, servicing requests"
		assert.Equal(t, Connected, Classify(raw).Event, raw)
	}
	for _, stamp := range []string{"0123-45-67 89:01:23.456789-9876", "9999-99-99 99:99:99.999999+0000"} {
		raw := "[" + stamp + "] [ID: 00000000] virtio_session_mount: Received vhost-user socket connection"
		assert.Equal(t, Connected, Classify(raw).Event, raw)
	}
}

// A line in brackets whose first field is not a timestamp (a guest's
// name, a module's own prefix) is not virtiofsd's prefix: it is logged
// whole, at the level its words say, and is no event.
func TestBracketedLineWhoseFirstFieldIsNoTimestampIsLoggedWhole(t *testing.T) {
	for raw, want := range map[string]Line{
		"[INFO  virtiofsd] Client connected, servicing requests": {"[INFO  virtiofsd] Client connected, servicing requests", sdjournal.PriInfo, NoEvent},
		"[virtiofsd ERROR x] failed":                             {"[virtiofsd ERROR x] failed", sdjournal.PriErr, NoEvent},
		"[2024-07-08T03:39:41 INFO  virtiofsd] x":                {"[2024-07-08T03:39:41 INFO  virtiofsd] x", sdjournal.PriInfo, NoEvent},
		"[2024-07-08Z INFO  virtiofsd] x":                        {"[2024-07-08Z INFO  virtiofsd] x", sdjournal.PriInfo, NoEvent},
		"[2024-07-08T03:39:41Z] warning":                         {"[2024-07-08T03:39:41Z] warning", sdjournal.PriWarning, NoEvent},
		"[2024-07-08T03:39:41Z NOTICE virtiofsd] x":              {"[2024-07-08T03:39:41Z NOTICE virtiofsd] x", sdjournal.PriInfo, NoEvent},
		"[2024-07-08T03:39:41Z INFO  virtiofsd":                  {"[2024-07-08T03:39:41Z INFO  virtiofsd", sdjournal.PriInfo, NoEvent},
	} {
		assert.Equal(t, want, Classify(raw), raw)
	}
	// A prefix alone, closed at the end of the line, is still the prefix.
	assert.Equal(t, Line{"", sdjournal.PriWarning, NoEvent}, Classify("[2024-07-08T03:39:41Z WARN  virtiofsd]"))
}
