package logsink

import (
	"io"
	"os"

	"github.com/sirupsen/logrus"
)

// ShimLog is the shim's own log: logrus text on stderr, timestamped only at
// a terminal, until ToJournal moves it to the journal.
type ShimLog struct {
	*logrus.Logger
	journaled bool
}

// NewShimLog logs as text to stderr.
func NewShimLog(stderr io.Writer) *ShimLog {
	l := logrus.New()
	l.SetOutput(stderr)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: !isTerminal(stderr), FullTimestamp: true})
	return &ShimLog{Logger: l}
}

// ToJournal sends entries to the journal with their fields and origin's
// (Hook), instead of as text through stderr (which systemd also sends to
// the journal, flattened). Called again, it replaces the origin.
func (l *ShimLog) ToJournal(origin Origin) {
	l.ReplaceHooks(logrus.LevelHooks{})
	l.AddHook(Hook{Origin: origin})
	l.SetOutput(io.Discard)
	l.journaled = true
}

// Journaled tells whether entries go to the journal natively: an error is
// then logged there, with its fields, rather than printed.
func (l *ShimLog) Journaled() bool { return l.journaled }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
