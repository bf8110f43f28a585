package virtiofsd

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		f    Flavor
		raw  string
		want Line
	}{
		{C, "virtio_session_mount: Waiting for vhost-user socket connection...\n",
			Line{"virtio_session_mount: Waiting for vhost-user socket connection...", journal.PriInfo, Ready}},
		{C, "virtio_session_mount: Received vhost-user socket connection",
			Line{"virtio_session_mount: Received vhost-user socket connection", journal.PriInfo, Connected}},
		{C, "virtio_loop: Exit", Line{"virtio_loop: Exit", journal.PriInfo, NoEvent}},
		// POLLIN|POLLHUP, or with POLLERR when a reply was left unread: the
		// VM hung up, which ends every C session.
		{C, "virtio_loop: Unexpected poll revents 11", Line{"virtio_loop: Unexpected poll revents 11", journal.PriInfo, Disconnected}},
		{C, "virtio_loop: Unexpected poll revents 19", Line{"virtio_loop: Unexpected poll revents 19", journal.PriInfo, Disconnected}},
		// POLLERR alone is not a hang-up.
		{C, "virtio_loop: Unexpected poll revents 8", Line{"virtio_loop: Unexpected poll revents 8", journal.PriWarning, NoEvent}},
		{C, "vhost socket accept: Interrupted system call", Line{"vhost socket accept: Interrupted system call", journal.PriInfo, NoEvent}},
		{Rust, "[2026-11-30T10:49:46Z WARN  virtiofsd::limits] Failure when trying to set the limit to 1000000, the hard limit (20000) of open file descriptors is used instead.",
			Line{"Failure when trying to set the limit to 1000000, the hard limit (20000) of open file descriptors is used instead.", journal.PriWarning, NoEvent}},
		{Rust, "[2026-11-30T10:50:51Z ERROR virtiofsd::util] Child process terminated by signal 9",
			Line{"Child process terminated by signal 9", journal.PriErr, NoEvent}},
		{C, `fuse: failed to stat source ("/nonexist"): No such file or directory`,
			Line{`fuse: failed to stat source ("/nonexist"): No such file or directory`, journal.PriErr, NoEvent}},
		{C, "[2024-07-08 03:39:41.123456+0000] [ID: 00000042] virtio_session_mount: Waiting for vhost-user socket connection...",
			Line{"virtio_session_mount: Waiting for vhost-user socket connection...", journal.PriDebug, Ready}},
		{C, "[2024-07-08 03:39:41.123456+0000] [ID: 00000001] lo_lookup(parent=1, name=x)",
			Line{"lo_lookup(parent=1, name=x)", journal.PriDebug, NoEvent}},
		{Rust, "[2024-07-08T03:39:41Z INFO  virtiofsd] Waiting for vhost-user socket connection...",
			Line{"Waiting for vhost-user socket connection...", journal.PriInfo, Ready}},
		{Rust, "[2024-07-08T03:39:42Z INFO  virtiofsd] Client connected, servicing requests",
			Line{"Client connected, servicing requests", journal.PriInfo, Connected}},
		{Rust, "[2024-07-08T03:39:43Z INFO  virtiofsd] Client disconnected, shutting down",
			Line{"Client disconnected, shutting down", journal.PriInfo, Disconnected}},
		{Rust, "[2024-07-08T03:39:43Z ERROR virtiofsd] Error entering sandbox: X",
			Line{"Error entering sandbox: X", journal.PriErr, NoEvent}},
		{Rust, "[2024-07-08T03:39:43Z WARN  virtiofsd::passthrough] slow", Line{"slow", journal.PriWarning, NoEvent}},
		{Rust, "[2024-07-08T03:39:43Z DEBUG virtiofsd] x", Line{"x", journal.PriDebug, NoEvent}},
		{Rust, "[2024-07-08T03:39:43Z TRACE virtiofsd] y", Line{"y", journal.PriDebug, NoEvent}},
		{C, "[not a prefix] hello", Line{"[not a prefix] hello", journal.PriInfo, NoEvent}},
		// The C one's debug prefix, with a zone west of UTC and a thread id
		// beyond 8 digits (%08ld pads, never cuts).
		{C, "[2024-07-08 03:39:41.123456-0500] [ID: 123456789] virtio_session_mount: Received vhost-user socket connection",
			Line{"virtio_session_mount: Received vhost-user socket connection", journal.PriDebug, Connected}},
		{C, "[2024-07-08 03:39:41.123456+0000] [ID: 00000001] virtio_loop: Unexpected poll revents 11",
			Line{"virtio_loop: Unexpected poll revents 11", journal.PriInfo, Disconnected}},
		// Revents as %x prints them, nothing else.
		{C, "virtio_loop: Unexpected poll revents 0x11", Line{"virtio_loop: Unexpected poll revents 0x11", journal.PriWarning, NoEvent}},
		{C, "virtio_loop: Unexpected poll revents 011", Line{"virtio_loop: Unexpected poll revents 011", journal.PriWarning, NoEvent}},
		{C, "virtio_loop: Unexpected poll revents 11 ", Line{"virtio_loop: Unexpected poll revents 11 ", journal.PriWarning, NoEvent}},
		{C, "", Line{"", journal.PriInfo, NoEvent}},
		{Rust, "[2024-07-08T03:39:43Z ERROR virtiofsd::vhost_user] Migration failed: Failed to load state: Inode 5: Migration source has lost inode 5",
			Line{"Migration failed: Failed to load state: Inode 5: Migration source has lost inode 5", journal.PriErr, MigrationLoadFailed}},
		{Rust, "[2024-07-08T03:39:43Z ERROR virtiofsd::vhost_user] Migration failed: Failed to save state: Failed to serialize inode 5",
			Line{"Migration failed: Failed to save state: Failed to serialize inode 5", journal.PriErr, MigrationSaveFailed}},
	} {
		assert.Equal(t, tc.want, Classify(tc.f, tc.raw), tc.raw)
	}
}

// TestClassifyIgnoresEventTextsThatAreNotVirtiofsdsOwnLine: lines a guest
// can put event texts in (the names it looks up, printed at debug level;
// paths quoted in warnings), and lines close to an event that virtiofsd
// does not print, are no events.
func TestClassifyIgnoresEventTextsThatAreNotVirtiofsdsOwnLine(t *testing.T) {
	for _, raw := range []string{
		// C at debug: the name is printed as it is, inside lo_lookup(...).
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000003] lo_lookup(parent=1, name=Client disconnected, shutting down)",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000003] lo_lookup(parent=1, name=virtio_session_mount: Waiting for vhost-user socket connection...)",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000003] lo_create(parent=1, name=virtio_loop: Unexpected poll revents 11) kill_priv=0",
		// The rest of a name after a newline, with lo_lookup's ")" after it.
		"virtio_loop: Unexpected poll revents 11)",
		"virtio_session_mount: Received vhost-user socket connection)",
		"[2024-01-01T00:00:00Z INFO  virtiofsd] Client disconnected, shutting down)",
		// The right text, the wrong place in the line.
		" virtio_session_mount: Waiting for vhost-user socket connection...",
		"x virtio_session_mount: Received vhost-user socket connection",
		"Client disconnected, shutting down",
		"Waiting for vhost-user socket connection...",
		// Rust: another target, another level, a message with more around it.
		"[2024-07-08T03:39:43Z INFO  virtiofsd::passthrough] Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z INFO  virtiofsd_x] Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z WARN  virtiofsd] Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z DEBUG virtiofsd] Client connected, servicing requests",
		"[2024-07-08T03:39:43Z TRACE virtiofsd] Waiting for vhost-user socket connection...",
		"[2024-07-08T03:39:43Z WARN  virtiofsd::passthrough::device_state::preserialization::find_paths] Failed to discover entry Client disconnected, shutting down of 1: x",
		"[2024-07-08T03:39:43Z INFO  virtiofsd] Found inode 5: Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z INFO  virtiofsd]  Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z INFO virtiofsd] Client disconnected, shutting down",
		"[2024-07-08T03:39:43.123Z INFO  virtiofsd] Client disconnected, shutting down",
		"[2024-07-08 03:39:43Z INFO  virtiofsd] Client disconnected, shutting down",
		"[x2024-07-08T03:39:43Z INFO  virtiofsd] Client disconnected, shutting down",
		// A failed migration: only the vhost_user module's own line, at error level.
		"[2024-07-08T03:39:43Z ERROR virtiofsd::vhost_user_x] Migration failed: Failed to load state: x",
		"[2024-07-08T03:39:43Z WARN  virtiofsd::vhost_user] Migration failed: Failed to load state: x",
		"[2024-07-08T03:39:43Z ERROR virtiofsd] Migration failed: Failed to save state: x",
		"[2024-07-08T03:39:43Z WARN  virtiofsd::passthrough::device_state::preserialization::find_paths] Failed to discover entry Migration failed: Failed to save state: x of 1: y",
		// C: a debug prefix that is not the one it writes.
		"[2024-07-08 03:39:41] [ID: 00000042] virtio_session_mount: Received vhost-user socket connection",
		"[2024-07-08 03:39:41.123456+0000] [ID: 42] virtio_session_mount: Received vhost-user socket connection",
		"[x] [ID: 00000042] virtio_loop: Unexpected poll revents 11",
		"[2024-07-08 03:39:41.123456+0000] [ID: 0000004x] virtio_loop: Unexpected poll revents 11",
	} {
		for _, f := range []Flavor{C, Rust} {
			assert.Equal(t, NoEvent, Classify(f, raw).Event, "%s: %s", f, raw)
		}
	}
}

// TestClassifyReadsOnlyItsFlavorsFormat: the supervisor knows which
// virtiofsd it runs, so an event line in the other flavor's format (a
// guest's file name, a line of something else the binary runs) is no
// event, only text at the priority its words suggest.
func TestClassifyReadsOnlyItsFlavorsFormat(t *testing.T) {
	cLines := []string{
		"virtio_session_mount: Waiting for vhost-user socket connection...",
		"virtio_session_mount: Received vhost-user socket connection",
		"virtio_loop: Unexpected poll revents 11",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000042] virtio_session_mount: Waiting for vhost-user socket connection...",
	}
	rustLines := []string{
		"[2024-07-08T03:39:41Z INFO  virtiofsd] Waiting for vhost-user socket connection...",
		"[2024-07-08T03:39:42Z INFO  virtiofsd] Client connected, servicing requests",
		"[2024-07-08T03:39:43Z INFO  virtiofsd] Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z ERROR virtiofsd::vhost_user] Migration failed: Failed to load state: x",
	}
	for _, raw := range cLines {
		assert.NotEqual(t, NoEvent, Classify(C, raw).Event, raw)
		l := Classify(Rust, raw)
		assert.Equal(t, Line{raw, barePriority(raw), NoEvent}, l, "a C line read from the Rust binary")
		assert.Equal(t, NoEvent, Classify(Auto, raw).Event, raw)
	}
	for _, raw := range rustLines {
		assert.NotEqual(t, NoEvent, Classify(Rust, raw).Event, raw)
		assert.Equal(t, Line{raw, barePriority(raw), NoEvent}, Classify(C, raw), "a Rust line read from the C binary")
		assert.Equal(t, NoEvent, Classify(Auto, raw).Event, raw)
	}
	assert.Equal(t, Line{"thread 'main' panicked at src/main.rs:1:2", journal.PriInfo, NoEvent},
		Classify(Rust, "thread 'main' panicked at src/main.rs:1:2\n"), "a bare line of the Rust binary")
	assert.Equal(t, journal.PriErr, Classify(Rust, "error: unexpected argument '--x' found").Priority)
}

// TestClassifyCannotTellALineStartedByANewlineInAName documents why the
// supervisor gates events by phase: virtiofsd prints a name with a newline
// in it as it is (C at debug level, Rust in migration warnings), so the
// physical line after the newline is the guest's, and can be exactly an
// event line. Classify, reading one line, cannot tell; launch takes ready
// and connected only before any guest is connected, and acts on no
// disconnect line.
func TestClassifyCannotTellALineStartedByANewlineInAName(t *testing.T) {
	for _, tc := range []struct {
		f       Flavor
		printed func(name string) string
		name    string
	}{
		{C, cLookup, "x\n[2024-01-01 00:00:00.000000+0000] [ID: 00000001] virtio_loop: Unexpected poll revents 11\ny"},
		{C, cLookup, "x\nvirtio_loop: Unexpected poll revents 11\ny"},
		{Rust, rustFindPaths, "x\n[2024-01-01T00:00:00Z INFO  virtiofsd] Client disconnected, shutting down\ny"},
	} {
		physical := strings.Split(strings.TrimSuffix(tc.printed(tc.name), "\n"), "\n")
		require.Len(t, physical, 3)
		assert.Equal(t, NoEvent, Classify(tc.f, physical[0]).Event, physical[0])
		assert.Equal(t, Disconnected, Classify(tc.f, physical[1]).Event, physical[1])
		assert.Equal(t, NoEvent, Classify(tc.f, physical[2]).Event, physical[2])
	}
}

// cLookup and rustFindPaths print a name as the C one does at debug level,
// and as the Rust one does in its migration warnings.
func cLookup(name string) string {
	return "[2024-07-08 03:39:41.123456+0000] [ID: 00000003] lo_lookup(parent=1, name=" + name + ")\n"
}

func rustFindPaths(name string) string {
	return "[2024-07-08T03:39:43Z WARN  virtiofsd::passthrough::device_state::preserialization::find_paths] Failed to discover entry " + name + " of 1: x\n"
}

// rustEventLine and cEventLine are an oracle for Classify, written
// independently of it: the whole lines that are events, in each flavor's
// exact format.
var (
	rustEventLine = regexp.MustCompile(`^(?:` +
		`\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO  virtiofsd\] (?:Waiting for vhost-user socket connection\.\.\.|Client connected, servicing requests|Client disconnected, shutting down)` +
		`|\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ERROR virtiofsd::vhost_user\] Migration failed: Failed to (?:load|save) state: (?s:.*)` +
		`)[\r\n]*$`)
	cEventLine = regexp.MustCompile(`^(?:\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}[+-]\d{4}\] \[ID: \d{8,}\] )?` +
		`(?:virtio_session_mount: Waiting for vhost-user socket connection\.\.\.|virtio_session_mount: Received vhost-user socket connection|virtio_loop: Unexpected poll revents ([1-9a-f][0-9a-f]{0,3}))` +
		`[\r\n]*$`)
)

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"virtio_session_mount: Waiting for vhost-user socket connection...",
		"[2024-07-08T03:39:41Z INFO  virtiofsd] Client connected, servicing requests",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000042] x",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000042] virtio_loop: Unexpected poll revents 19",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000003] lo_lookup(parent=1, name=Client disconnected, shutting down)",
		"[2024-07-08T03:39:43Z INFO  virtiofsd::passthrough] Client disconnected, shutting down",
		"[2024-07-08T03:39:43Z DEBUG virtiofsd] Client disconnected, shutting down",
		"virtio_loop: Unexpected poll revents 11)",
		"[", "[]", "[] ", "[ID: ", "[a] [ID: b] c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, fl := range []Flavor{Auto, C, Rust} {
			classifyAgainstOracle(t, fl, raw)
		}
	})
}

func classifyAgainstOracle(t *testing.T, fl Flavor, raw string) {
	l := Classify(fl, raw)
	if l.Priority < journal.PriEmerg || l.Priority > journal.PriDebug {
		t.Fatalf("%s: priority %d out of range for %q", fl, l.Priority, raw)
	}
	if len(l.Message) > len(raw) {
		t.Fatalf("%s: message %q longer than the line %q", fl, l.Message, raw)
	}
	var m []string
	switch fl {
	case C:
		m = cEventLine.FindStringSubmatch(raw)
	case Rust:
		m = rustEventLine.FindStringSubmatch(raw)
	}
	if l.Event != NoEvent && m == nil {
		t.Fatalf("%s from %q, which is not an event line the %s virtiofsd prints", l.Event, raw, fl)
	}
	if m == nil {
		return
	}
	if len(m) > 1 && m[1] != "" {
		if v, _ := strconv.ParseUint(m[1], 16, 16); v&0x10 == 0 {
			if l.Event != NoEvent {
				t.Fatalf("%s from %q: revents without POLLHUP", l.Event, raw)
			}
			return
		}
	}
	if l.Event == NoEvent {
		t.Fatalf("no event from %q, an event line the %s virtiofsd prints", raw, fl)
	}
}
