package virtiofsd

import (
	"strconv"
	"strings"
	"unsafe"

	"github.com/coreos/go-systemd/v22/journal"
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
	Message  string           // the text, without virtiofsd's own timestamp/level prefix
	Priority journal.Priority // syslog priority from the line's level
	Event    Event
}

// The texts that mark events, for both flavors (docs/virtiofsd.md).
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

	// The C one prints its events from virtio_session_mount and virtio_loop,
	// with the function name first. It has no hang-up line of its own: its
	// session loop logs the socket's poll events, POLLHUP (0x10) among them,
	// and ends ("%s: Unexpected poll revents %x").
	cReadyLine     = "virtio_session_mount: " + ReadyText
	cConnectedLine = "virtio_session_mount: " + connectedTextC
	cPollText      = "virtio_loop: Unexpected poll revents "
	// The Rust one prints them from its main module, target "virtiofsd",
	// at INFO: "[2024-07-08T03:39:41Z INFO  virtiofsd] Waiting for ...".
	rustEventTarget = "virtiofsd"
)

// Classify reads one line of a virtiofsd of flavor f, in that flavor's
// format alone:
//
//	Rust:        [2024-07-08T03:39:41Z INFO  virtiofsd] Waiting for ...
//	C, default:  virtio_session_mount: Waiting for ...
//	C, debug:    [2024-07-08 03:39:41.123456+0000] [ID: 00000042] virtio_session_mount: ...
//
// Rust levels map to syslog priorities; bare C lines are info unless they
// read as an error or warning; C's debug-prefixed lines are debug. A line
// without its flavor's prefix (the Rust one's panics, say) is read as a
// bare line, and is never an event: the other flavor's event text read
// from this binary is just text. Auto, a flavor not yet known, reads every
// line so.
//
// An event is only ever the whole line exactly as virtiofsd prints it:
// for Rust, its own "virtiofsd" target (not virtiofsd::passthrough and the
// like) at INFO with the exact message; for C, the exact text from the
// start of the line, bare or after a well-formed debug prefix. A text
// quoted inside another line (a file name in a debug line, a path in a
// warning) is no event. That is not enough on its own: both flavors print
// file names as they are at some level (C at debug, Rust in its migration
// warnings), so a name with a newline in it starts a physical line the
// guest wrote, which may look exactly like an event. The supervisor
// therefore takes each event only in the phase where no guest can write
// yet (ready while starting, connected while waiting) and acts on no
// disconnect line at all (see launch).
func Classify(f Flavor, raw string) Line {
	raw = strings.TrimRight(raw, "\r\n")
	l := Line{Message: raw, Priority: journal.PriInfo}
	switch f {
	case Rust:
		msg, level, target, ok := cutRustLine(raw)
		if !ok {
			l.Priority = barePriority(raw)
			return l
		}
		l.Message, l.Priority = msg, rustPriority(level)
		l.Event = rustEvent(msg, level, target)
	case C:
		if rest, ok := cutCDebugPrefix(raw); ok {
			l.Message, l.Priority = rest, journal.PriDebug
			if isCDebugPrefix(raw[:len(raw)-len(rest)]) {
				l.Event = cEvent(rest)
			}
		} else {
			l.Priority = barePriority(raw)
			l.Event = cEvent(raw)
		}
	default:
		l.Priority = barePriority(raw)
	}
	if l.Event == Disconnected {
		l.Priority = journal.PriInfo // C's hang-up is logged as an error; it ends every session
	}
	return l
}

// rustEvent reads an event from a Rust line (cutRustLine): INFO from the
// target "virtiofsd" with the exact message for the session's events,
// ERROR from "virtiofsd::vhost_user" for a failed migration.
func rustEvent(msg, level, target string) Event {
	switch {
	case level == "INFO" && target == rustEventTarget:
		switch msg {
		case ReadyText:
			return Ready
		case connectedTextR:
			return Connected
		case disconnectedText:
			return Disconnected
		}
	case level == "ERROR" && target == migrationTarget:
		switch {
		case strings.HasPrefix(msg, migrationLoadFailed):
			return MigrationLoadFailed
		case strings.HasPrefix(msg, migrationSaveFailed):
			return MigrationSaveFailed
		}
	}
	return NoEvent
}

// cutRustLine splits a line with exactly env_logger's prefix, as the Rust
// one prints it at every level: "[2024-07-08T03:39:41Z INFO  target]
// message" (the timestamp to the second, the level padded to 5). It reads
// without allocating: a flood calls it per line.
func cutRustLine(raw string) (msg, level, target string, ok bool) {
	const stampLen = len("2024-07-08T03:39:41Z")
	const head = 1 + stampLen + 1 + 5 + 1 // "[", stamp, " ", level padded to 5, " "
	if len(raw) < head || raw[0] != '[' || !isRustStamp(raw[1:1+stampLen]) || raw[1+stampLen] != ' ' || raw[head-1] != ' ' {
		return "", "", "", false
	}
	level = strings.TrimRight(raw[2+stampLen:head-1], " ")
	switch level {
	case "ERROR", "WARN", "INFO", "DEBUG", "TRACE":
	default:
		return "", "", "", false
	}
	target, msg, ok = strings.Cut(raw[head:], "] ")
	if !ok || target == "" || strings.TrimLeft(target, "abcdefghijklmnopqrstuvwxyz0123456789_:") != "" {
		return "", "", "", false
	}
	return msg, level, target, true
}

// cEvent reads an event from a C message (the line without its debug
// prefix): the function name at its start, the exact text to its end.
func cEvent(msg string) Event {
	switch msg {
	case cReadyLine:
		return Ready
	case cConnectedLine:
		return Connected
	}
	if cHangUp(msg) {
		return Disconnected
	}
	return NoEvent
}

// cHangUp tells whether a C line is its session loop seeing the client
// hang up ("virtio_loop: Unexpected poll revents 11", or 19 when the client
// left a reply unread: POLLHUP in the hexadecimal revents, as printf's %x
// writes it), which ends every session, rather than a real error.
func cHangUp(msg string) bool {
	hex, ok := strings.CutPrefix(msg, cPollText)
	if !ok || hex == "" || len(hex) > 4 {
		return false
	}
	revents, err := strconv.ParseUint(hex, 16, 16)
	return err == nil && strconv.FormatUint(revents, 16) == hex && revents&0x10 != 0
}

// isRustStamp tells whether s is env_logger's timestamp to the second,
// 2024-07-08T03:39:41Z, exactly.
func isRustStamp(s string) bool {
	return matchShape(s, "dddd-dd-ddTdd:dd:ddZ")
}

// isCDebugPrefix tells whether p is exactly the prefix the C one writes
// before each line at debug level:
// "[2024-07-08 03:39:41.123456+0000] [ID: 00000042] " (local time with its
// zone offset, then the thread id, printed with %08ld).
func isCDebugPrefix(p string) bool {
	const stamp = "[dddd-dd-dd dd:dd:dd.dddddd"
	if len(p) < len(stamp) || !matchShape(p[:len(stamp)], stamp) {
		return false
	}
	p = p[len(stamp):]
	if len(p) < 5 || (p[0] != '+' && p[0] != '-') || !matchShape(p[1:5], "dddd") {
		return false
	}
	id, ok := strings.CutPrefix(p[5:], "] [ID: ")
	if !ok {
		return false
	}
	id, ok = strings.CutSuffix(id, "] ")
	return ok && len(id) >= 8 && isDigits(id)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// matchShape tells whether s has the shape: each 'd' a decimal digit,
// every other byte itself.
func matchShape(s, shape string) bool {
	if len(s) != len(shape) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if shape[i] == 'd' {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		} else if s[i] != shape[i] {
			return false
		}
	}
	return true
}

func rustPriority(level string) journal.Priority {
	switch level {
	case "ERROR":
		return journal.PriErr
	case "WARN":
		return journal.PriWarning
	case "INFO":
		return journal.PriInfo
	}
	return journal.PriDebug
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

// barePriority guesses the level of a line printed without its flavor's
// prefix: the C one, at the default level, prints errors and information
// alike so. It
// lower-cases the line once, into a buffer on the stack: no allocation for
// the lines virtiofsd prints.
func barePriority(s string) journal.Priority {
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
		return journal.PriErr
	case strings.Contains(l, "warn"), strings.Contains(l, "unexpected"):
		return journal.PriWarning
	}
	return journal.PriInfo
}
