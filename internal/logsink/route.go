package logsink

import (
	"fmt"
	"io"

	"github.com/coreos/go-systemd/v22/journal"
)

// Route is where a run sends virtiofsd's lines and the shim's own entries:
// the journal, as native entries with Origin's fields, or text on stderr.
type Route struct {
	// Journal is true when the lines go to the journal.
	Journal bool
	// Origin names the entries' instance, unit and session in the journal.
	Origin Origin
}

// NewRoute decides a run's route from its --log-target, decided first so
// that even a config error reaches the journal with the instance's field:
// "journal", "stderr", or "auto", the journal when stderr is connected to
// it (underJournal), as it is for a systemd service. On the journal, the
// origin names instance (still "" when the run was given none) and the
// shim's own unit, which selfUnit(user) finds (SelfUnitOf in the program):
// journalctl honours OBJECT_SYSTEMD_UNIT from root only, so a user
// instance names its unit in USER_UNIT, which journalctl --user -u matches
// in entries of the user's own uid. Another target is an error.
func NewRoute(target, instance string, user bool, underJournal func() bool, selfUnit func(user bool) string) (*Route, error) {
	r := &Route{Origin: Origin{Instance: instance}}
	switch target {
	case "auto":
		r.Journal = underJournal()
	case "journal":
		r.Journal = true
	case "stderr":
	default:
		return nil, fmt.Errorf("%s: want auto, journal or stderr", target)
	}
	if !r.Journal {
		return r, nil
	}
	if user {
		r.Origin.UserUnit = selfUnit(user)
	} else {
		r.Origin.Unit = selfUnit(user)
	}
	return r, nil
}

// Sink is where virtiofsd's lines of instance go, and journald's limit to
// respect there: on the journal, entries that name instance from now on,
// and lines journald would discard (its per-unit rate limit) are not sent
// but counted, and reported as journald reports them; else text on stderr,
// with no limit.
func (r *Route) Sink(instance string, stderr io.Writer) (Sink, Limits) {
	if !r.Journal {
		return TextSink{W: stderr}, Limits{}
	}
	r.Origin.Instance = instance
	return JournalSink{Origin: r.Origin}, JournaldLimits("/")
}

// Session names the session the entries belong to from now on, and
// returns the origin the shim's own entries then carry.
func (r *Route) Session(id string) Origin {
	r.Origin.Session = id
	return r.Origin
}

// SelfUnitOf is the unit this process runs in: SelfUserUnit for a user
// manager's instance, else SelfUnit.
func SelfUnitOf(user bool) string {
	if user {
		return SelfUserUnit()
	}
	return SelfUnit()
}

// UnderJournal tells whether stderr is connected to the journal, as it is
// for a systemd service, so that native journal entries can replace text.
func UnderJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}
