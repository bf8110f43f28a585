package launch

import "github.com/coreos/go-systemd/v22/daemon"

// Notifier sends sd_notify(3) states to the service manager.
type Notifier interface {
	Notify(state string) error
}

// SystemdNotifier notifies $NOTIFY_SOCKET through go-systemd, keeping the
// variable set so that STOPPING=1 and WATCHDOG=1 still reach systemd later.
// Off systemd (no NOTIFY_SOCKET) it does nothing.
type SystemdNotifier struct{}

// Notify sends state; not running under systemd is not an error.
func (SystemdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
