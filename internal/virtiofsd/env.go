package virtiofsd

import "strings"

// dropEnv are variables meant for the shim alone: systemd's socket
// activation, notification and watchdog protocols, the journal stream that
// the shim's stderr, not virtiofsd's, is connected to, and its cache folder.
var dropEnv = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
	"WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "RUNTIME_DIRECTORY"}

// ChildEnv returns environ without the variables meant for the shim alone,
// and, for the Rust virtiofsd, without RUST_LOG (it overrides --log-level and
// can hide the readiness line).
func ChildEnv(environ []string, f Flavor) []string {
	drop := dropEnv
	if f == Rust {
		drop = append(drop[:len(drop):len(drop)], "RUST_LOG")
	}
	out := make([]string, 0, len(environ))
next:
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		for _, d := range drop {
			if name == d {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
