package virtiofsd

import (
	"strconv"
	"strings"
	"unsafe"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
)

// Event is what a virtiofsd line says about the session, if anything.
type Event int

// The events the shim reacts to.
const (
	NoEvent      Event = iota
	Ready              // listening on the socket: READY=1
	Connected          // a vhost-user client (the VM) connected
	Disconnected       // the client went away; virtiofsd is ending
	// MigrationLoadFailed: this virtiofsd, a migration destination, could
	// not load the state the source sent; the VM does not arrive here.
	MigrationLoadFailed
	// MigrationSaveFailed: this virtiofsd, a migration source, could not
	// save its state for the destination.
	MigrationSaveFailed
)

func (e Event) String() string {
	return [...]string{"none", "ready", "connected", "disconnected", "migration-load-failed", "migration-save-failed"}[e]
}

// Line is one line of virtiofsd's stderr, classified.
type Line struct {
	Message  string             // the text, without virtiofsd's own timestamp/level prefix
	Priority sdjournal.Priority // syslog priority from the line's level
	Event    Event
}

// The texts that mark events, for both flavors (DESIGN.md).
const (
	ReadyText        = "Waiting for vhost-user socket connection..."
	connectedTextC   = "Received vhost-user socket connection"
	connectedTextR   = "Client connected, servicing requests"
	disconnectedText = "Client disconnected, shutting down"
	// A failed migration: the Rust one's own line at error level, from its
	// vhost_user module (1.13.2: src/vhost_user.rs logs the migration
	// thread's error as "Migration failed: {err}", the thread's error being
	// "Failed to load state: ..." or "Failed to save state: ...").
	migrationTarget     = "virtiofsd::vhost_user"
	migrationLoadFailed = "Migration failed: Failed to load state: "
	migrationSaveFailed = "Migration failed: Failed to save state: "
	// The C one has no hang-up line of its own: its session loop logs the
	// socket's poll events, POLLHUP (0x10) among them, and ends.
	cPollText = "virtio_loop: Unexpected poll revents "
)

// Classify reads one line in either flavor's format:
//
//	Rust:        [2024-07-08T03:39:41Z INFO  virtiofsd] Waiting for ...
//	C, default:  virtio_session_mount: Waiting for ...
//	C, debug:    [2024-07-08 03:39:41.123456+0000] [ID: 00000042] virtio_session_mount: ...
//
// Rust levels map to syslog priorities; bare C lines are info unless they
// read as an error or warning; C's debug-prefixed lines are debug.
func Classify(raw string) Line {
	raw = strings.TrimRight(raw, "\r\n")
	l := Line{Message: raw, Priority: sdjournal.PriInfo}
	if rest, level, target, ok := cutRustPrefix(raw); ok {
		l.Message, l.Priority = rest, rustPriority(level)
		if level == "ERROR" && target == migrationTarget {
			switch {
			case strings.HasPrefix(rest, migrationLoadFailed):
				l.Event = MigrationLoadFailed
				return l
			case strings.HasPrefix(rest, migrationSaveFailed):
				l.Event = MigrationSaveFailed
				return l
			}
		}
	} else if rest, ok := cutCDebugPrefix(raw); ok {
		l.Message, l.Priority = rest, sdjournal.PriDebug
	} else {
		l.Priority = bareCPriority(raw)
	}
	switch {
	case strings.Contains(l.Message, ReadyText):
		l.Event = Ready
	case strings.Contains(l.Message, connectedTextC), strings.Contains(l.Message, connectedTextR):
		l.Event = Connected
	case strings.Contains(l.Message, disconnectedText):
		l.Event = Disconnected
	case cHangUp(l.Message):
		l.Event, l.Priority = Disconnected, sdjournal.PriInfo
	}
	return l
}

// cHangUp tells whether a C line is its session loop seeing the client
// hang up ("virtio_loop: Unexpected poll revents 11", or 19 when the client
// left a reply unread: POLLHUP in the hexadecimal revents), which ends
// every session, rather than a real error.
func cHangUp(msg string) bool {
	hex, ok := strings.CutPrefix(msg, cPollText)
	if !ok {
		return false
	}
	revents, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 16)
	return err == nil && revents&0x10 != 0
}

// cutRustPrefix splits "[TIMESTAMP LEVEL target] message".
func cutRustPrefix(s string) (rest, level, target string, ok bool) {
	if !strings.HasPrefix(s, "[") {
		return "", "", "", false
	}
	head, rest, found := strings.Cut(s[1:], "] ")
	if !found {
		head, found = strings.CutSuffix(s[1:], "]")
		if !found {
			return "", "", "", false
		}
	}
	// "TIMESTAMP LEVEL target", fields split by spaces (the level is
	// padded to 5), read without allocating: a flood calls this per line.
	stamp, after, _ := strings.Cut(strings.TrimLeft(head, " "), " ")
	lvl, target, _ := strings.Cut(strings.TrimLeft(after, " "), " ")
	if lvl == "" || !strings.HasSuffix(stamp, "Z") || !strings.Contains(stamp, "T") {
		return "", "", "", false
	}
	switch lvl {
	case "ERROR", "WARN", "INFO", "DEBUG", "TRACE":
		return rest, lvl, strings.TrimLeft(target, " "), true
	}
	return "", "", "", false
}

func rustPriority(level string) sdjournal.Priority {
	switch level {
	case "ERROR":
		return sdjournal.PriErr
	case "WARN":
		return sdjournal.PriWarning
	case "INFO":
		return sdjournal.PriInfo
	}
	return sdjournal.PriDebug
}

// cutCDebugPrefix splits "[YYYY-MM-DD HH:MM:SS.uuuuuu+0000] [ID: 00000042] message".
func cutCDebugPrefix(s string) (string, bool) {
	if !strings.HasPrefix(s, "[") {
		return "", false
	}
	_, rest, found := strings.Cut(s, "] [ID: ")
	if !found {
		return "", false
	}
	_, rest, found = strings.Cut(rest, "] ")
	if !found {
		return "", false
	}
	return rest, true
}

// bareCPriority guesses the level of a C virtiofsd line printed without
// prefix: at the default level it prints errors and information alike. It
// lower-cases the line once, into a buffer on the stack: no allocation for
// the lines virtiofsd prints.
func bareCPriority(s string) sdjournal.Priority {
	var buf [512]byte
	l := s
	if len(s) <= len(buf) {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		l = unsafe.String(&buf[0], len(s))
	} else {
		l = strings.ToLower(s)
	}
	switch {
	case strings.Contains(l, "error"), strings.Contains(l, "failed"), strings.Contains(l, "fail to"),
		strings.Contains(l, "cannot"), strings.Contains(l, "unable to"):
		return sdjournal.PriErr
	case strings.Contains(l, "warn"), strings.Contains(l, "unexpected"):
		return sdjournal.PriWarning
	}
	return sdjournal.PriInfo
}
