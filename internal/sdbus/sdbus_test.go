package sdbus

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConnectToNowhereSaysWhatWasTriedAndWhatToDo(t *testing.T) {
	_, err := ConnectTo(context.Background(), "/nonexistent/systemd/private", "unix:path=/nonexistent/dbus/system_bus_socket")
	var unreachable *UnreachableError
	require.ErrorAs(t, err, &unreachable)
	if os.Geteuid() == 0 {
		assert.Contains(t, err.Error(), "/nonexistent/systemd/private: dial unix")
	}
	assert.Contains(t, err.Error(), "system bus unix:path=/nonexistent/dbus/system_bus_socket: dial unix")
	assert.Contains(t, err.Error(), "run it on a host booted with systemd")
	assert.True(t, errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "no such file"), err.Error())
}
