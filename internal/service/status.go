package service

import (
	"strings"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
)

// NotifyFailure tells systemd, as the shim exits with err, what failed: the
// unit's status text is then the failure, never a stale "Serving a
// vhost-user client ..." from the session that ended (issue 25). A clean
// end (nil) sends nothing: the last status (stopping, releasing) stands.
// Only the shim's main function calls it, once, as it returns.
func NotifyFailure(n launch.Notifier, err error) {
	if err == nil || n == nil {
		return
	}
	// STATUS= is one line: a newline would start another assignment.
	text := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	_ = n.Notify("STATUS=Failed: " + text) // off systemd it does nothing; nothing is left to tell
}
