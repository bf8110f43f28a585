package logsink

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
)

// ConsoleLog copies each line a program that systemd runs with stderr on the
// console (a generator) reports to where an admin finds it: to the journal
// when journald runs (daemon-reload), else to the kernel log, which journald
// reads at boot, as systemd's own generators do. Every line also goes to
// Stderr. The identifier prefix "IDENT: " of a line is left out of the copy,
// which carries it as SYSLOG_IDENTIFIER or the kernel log's tag.
type ConsoleLog struct {
	Stderr     io.Writer
	Identifier string
	// Journal sends a line to the journal, or is nil off journald.
	Journal func(msg string, fields map[string]string) error
	// Kmsg is /dev/kmsg when there is no journal, or nil.
	Kmsg io.Writer
	PID  int // the process's id, for the kernel log's tag
}

// NewConsoleLog is the ConsoleLog of this process: the journal if journald
// runs, else /dev/kmsg if it can be opened, else stderr alone.
func NewConsoleLog(stderr io.Writer, identifier string) *ConsoleLog {
	l := &ConsoleLog{Stderr: stderr, Identifier: identifier, PID: os.Getpid()}
	switch {
	case journal.Enabled():
		l.Journal = func(msg string, fields map[string]string) error {
			return journal.Send(msg, journal.PriWarning, fields)
		}
	default:
		if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
			l.Kmsg = f // left open: a generator exits soon
		}
	}
	return l
}

// Write writes p to Stderr and copies each of its lines, at warning
// priority. Only Stderr's error is returned: the copy is best effort.
func (l *ConsoleLog) Write(p []byte) (int, error) {
	n, err := l.Stderr.Write(p)
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimPrefix(string(line), l.Identifier+": ")
		switch {
		case l.Journal != nil:
			_ = l.Journal(msg, map[string]string{FieldIdentifier: l.Identifier})
		case l.Kmsg != nil:
			_, _ = fmt.Fprintf(l.Kmsg, "<%d>%s[%d]: %s\n", journal.PriWarning, l.Identifier, l.PID, msg)
		}
	}
	return n, err
}
