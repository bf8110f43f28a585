package config

import "time"

// The timeouts an instance gets when its config sets none (READY_TIMEOUT=,
// STOP_TIMEOUT=; a Config holds 0 then). The units' TimeoutStartSec= and
// TimeoutStopSec= leave room for them.
const (
	// DefaultReadyTimeout is how long virtiofsd may take to print its
	// readiness line before the shim kills it.
	DefaultReadyTimeout = 10 * time.Second
	// DefaultStopTimeout is the grace between the shim's SIGTERM to
	// virtiofsd and its SIGKILL.
	DefaultStopTimeout = 5 * time.Second
)
