package shimbox

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestTheHarnessLooksWhereTheUnitsPutThings: the harness asks the
// product's own functions for its paths; here they are held against the
// paths the units and the docs spell.
func TestTheHarnessLooksWhereTheUnitsPutThings(t *testing.T) {
	assert.Equal(t, "/run/virtiofsd/vm1.sock", SocketPath("vm1"))
	assert.Equal(t, "/run", RuntimeDir())
	u := &User{Name: "ann", UID: 1000}
	assert.Equal(t, "/run/user/1000/virtiofsd/vm1.sock", u.Socket("vm1"))
	assert.Contains(t, u.Env(), "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus")
}
