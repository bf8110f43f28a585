package logsink

import (
	"fmt"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// Hook sends the shim's own logrus entries to the journal, each logrus field
// as a journal field (upper-cased, prefixed SHIM_), under
// SYSLOG_IDENTIFIER=virtiofsd-shim and with the Origin's fields.
type Hook struct {
	Origin
}

// Levels implements logrus.Hook.
func (Hook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook.
func (h Hook) Fire(e *logrus.Entry) error {
	vars := map[string]string{FieldIdentifier: "virtiofsd-shim"}
	h.addTo(vars)
	for k, v := range e.Data {
		vars[fieldName(k)] = fmt.Sprint(v)
	}
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey]; ok {
		msg += ": " + fmt.Sprint(err)
	}
	return journal.Send(msg, priority(e.Level), vars)
}

// fieldName turns a logrus key into a valid journal field name.
func fieldName(k string) string {
	var b strings.Builder
	b.WriteString("SHIM_")
	for _, r := range strings.ToUpper(k) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func priority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel:
		return journal.PriCrit
	case logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	}
	return journal.PriDebug
}
