package shimbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnabledSocketActivatesTheShimOnFirstConnection(t *testing.T) {
	b := New(t, Options{})
	ctx := context.Background()
	_, err := b.AddInstance("vm1")
	require.NoError(t, err)
	out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@vm1.socket")
	require.NoError(t, err, out)
	c, err := b.Dial("vm1", 10*time.Second)
	require.NoError(t, err)
	out, _ = b.Systemctl(ctx, "show", "-p", "ActiveState,SubState,StatusText", "virtiofsd@vm1.service")
	assert.Contains(t, out, "ActiveState=active")
	assert.Contains(t, out, "StatusText=Serving a vhost-user client on /run/virtiofsd/vm1.sock")
	c.Close()
	require.Eventually(t, func() bool {
		out, _ := b.Systemctl(ctx, "show", "-p", "ActiveState", "virtiofsd@vm1.service")
		return strings.Contains(out, "ActiveState=inactive")
	}, 10*time.Second, 50*time.Millisecond)
}
