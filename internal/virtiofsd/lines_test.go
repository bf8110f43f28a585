package virtiofsd

import (
	"strings"
	"testing"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Line
	}{
		{"virtio_session_mount: Waiting for vhost-user socket connection...\n",
			Line{"virtio_session_mount: Waiting for vhost-user socket connection...", sdjournal.PriInfo, Ready}},
		{"virtio_session_mount: Received vhost-user socket connection",
			Line{"virtio_session_mount: Received vhost-user socket connection", sdjournal.PriInfo, Connected}},
		{"virtio_loop: Exit", Line{"virtio_loop: Exit", sdjournal.PriInfo, NoEvent}},
		// POLLIN|POLLHUP, or with POLLERR when a reply was left unread: the
		// VM hung up, which ends every C session.
		{"virtio_loop: Unexpected poll revents 11", Line{"virtio_loop: Unexpected poll revents 11", sdjournal.PriInfo, Disconnected}},
		{"virtio_loop: Unexpected poll revents 19", Line{"virtio_loop: Unexpected poll revents 19", sdjournal.PriInfo, Disconnected}},
		// POLLERR alone is not a hang-up.
		{"virtio_loop: Unexpected poll revents 8", Line{"virtio_loop: Unexpected poll revents 8", sdjournal.PriWarning, NoEvent}},
		{"vhost socket accept: Interrupted system call", Line{"vhost socket accept: Interrupted system call", sdjournal.PriInfo, NoEvent}},
		{"[2026-11-30T10:49:46Z WARN  virtiofsd::limits] Failure when trying to set the limit to 1000000, the hard limit (20000) of open file descriptors is used instead.",
			Line{"Failure when trying to set the limit to 1000000, the hard limit (20000) of open file descriptors is used instead.", sdjournal.PriWarning, NoEvent}},
		{"[2026-11-30T10:50:51Z ERROR virtiofsd::util] Child process terminated by signal 9",
			Line{"Child process terminated by signal 9", sdjournal.PriErr, NoEvent}},
		{`fuse: failed to stat source ("/nonexist"): No such file or directory`,
			Line{`fuse: failed to stat source ("/nonexist"): No such file or directory`, sdjournal.PriErr, NoEvent}},
		{"[2024-07-08 03:39:41.123456+0000] [ID: 00000042] virtio_session_mount: Waiting for vhost-user socket connection...",
			Line{"virtio_session_mount: Waiting for vhost-user socket connection...", sdjournal.PriDebug, Ready}},
		{"[2024-07-08 03:39:41.123456+0000] [ID: 00000001] lo_lookup(parent=1, name=x)",
			Line{"lo_lookup(parent=1, name=x)", sdjournal.PriDebug, NoEvent}},
		{"[2024-07-08T03:39:41Z INFO  virtiofsd] Waiting for vhost-user socket connection...",
			Line{"Waiting for vhost-user socket connection...", sdjournal.PriInfo, Ready}},
		{"[2024-07-08T03:39:42Z INFO  virtiofsd] Client connected, servicing requests",
			Line{"Client connected, servicing requests", sdjournal.PriInfo, Connected}},
		{"[2024-07-08T03:39:43Z INFO  virtiofsd] Client disconnected, shutting down",
			Line{"Client disconnected, shutting down", sdjournal.PriInfo, Disconnected}},
		{"[2024-07-08T03:39:43Z ERROR virtiofsd] Error entering sandbox: X",
			Line{"Error entering sandbox: X", sdjournal.PriErr, NoEvent}},
		{"[2024-07-08T03:39:43Z WARN  virtiofsd::passthrough] slow", Line{"slow", sdjournal.PriWarning, NoEvent}},
		{"[2024-07-08T03:39:43Z DEBUG virtiofsd] x", Line{"x", sdjournal.PriDebug, NoEvent}},
		{"[2024-07-08T03:39:43Z TRACE virtiofsd] y", Line{"y", sdjournal.PriDebug, NoEvent}},
		{"[not a prefix] hello", Line{"[not a prefix] hello", sdjournal.PriInfo, NoEvent}},
		{"", Line{"", sdjournal.PriInfo, NoEvent}},
	} {
		assert.Equal(t, tc.want, Classify(tc.raw), tc.raw)
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"virtio_session_mount: Waiting for vhost-user socket connection...",
		"[2024-07-08T03:39:41Z INFO  virtiofsd] Client connected, servicing requests",
		"[2024-07-08 03:39:41.123456+0000] [ID: 00000042] x",
		"[", "[]", "[] ", "[ID: ", "[a] [ID: b] c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		l := Classify(raw)
		if l.Priority < sdjournal.PriEmerg || l.Priority > sdjournal.PriDebug {
			t.Fatalf("priority %d out of range for %q", l.Priority, raw)
		}
		if len(l.Message) > len(raw) {
			t.Fatalf("message %q longer than the line %q", l.Message, raw)
		}
		if l.Event == Ready && !containsReady(raw) {
			t.Fatalf("ready without the readiness text in %q", raw)
		}
	})
}

func containsReady(s string) bool { return strings.Contains(s, ReadyText) }
