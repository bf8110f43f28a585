package bench

import (
	"io"

	"github.com/sirupsen/logrus"
)

// quietLog drops the supervisor's own log lines.
func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
