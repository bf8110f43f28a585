package instances

import (
	"context"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
)

// Bus is the part of systemd's D-Bus API that List uses, all read-only: the
// seam that lets tests use a fake; *sdbus.Conn is the real one. Its methods
// are safe for concurrent use.
type Bus interface {
	// ListUnitsByPatterns is systemd's Manager.ListUnitsByPatterns: the
	// units loaded in memory whose names match one of patterns (any state
	// when states is empty). One D-Bus call.
	ListUnitsByPatterns(ctx context.Context, states, patterns []string) ([]sddbus.UnitStatus, error)
	// GetAll asks for the properties of every object in reqs at once and
	// waits for all the replies: len(reqs) D-Bus calls, in flight together,
	// so the wait is about one round trip plus systemd's work, not len(reqs)
	// round trips. It returns one reply per request, in order.
	GetAll(ctx context.Context, reqs []sdbus.PropertiesRequest) []sdbus.PropertiesReply
	// Close ends the connection.
	Close() error
}
