package shimbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

func TestEnabledSocketActivatesTheShimOnFirstConnection(t *testing.T) {
	Legs(t, func(t *testing.T, leg Platform) {
		b := New(t, Options{Platform: leg})
		ctx := context.Background()
		_, err := b.AddInstance("vm1")
		require.NoError(t, err)
		out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@vm1.socket")
		require.NoError(t, err, out)
		c, err := b.Session("vm1", 10*time.Second)
		require.NoError(t, err)
		out, _ = b.Systemctl(ctx, "show", "-p", "ActiveState", "virtiofsd@vm1.service")
		assert.Contains(t, out, "ActiveState=active")
		st, err := b.LiveState(ctx, "vm1")
		require.NoError(t, err)
		if assert.NotNil(t, st) {
			assert.Equal(t, state.Serving, st.Phase)
			assert.Equal(t, "/run/virtiofsd/vm1.sock", st.Socket)
		}
		c.Close()
		require.Eventually(t, func() bool {
			out, _ := b.Systemctl(ctx, "show", "-p", "ActiveState", "virtiofsd@vm1.service")
			return strings.Contains(out, "ActiveState=inactive")
		}, 10*time.Second, 50*time.Millisecond)
	})
}

// TestEachLegRunsItsOwnPlatform: the box of each leg runs that leg's
// systemd, with the leg's virtiofsd where the shim looks for it; on Debian
// 13 both came from apt, virtiofsd as the package's dependency.
func TestEachLegRunsItsOwnPlatform(t *testing.T) {
	Legs(t, func(t *testing.T, leg Platform) {
		b := New(t, Options{Platform: leg})
		ctx := context.Background()
		version, err := b.Systemctl(ctx, "show", "-p", "Version", "--value")
		require.NoError(t, err)
		want := map[Platform]string{Debian12: "252", Debian13: "257"}[leg]
		assert.True(t, strings.HasPrefix(version, want), "systemd %s, want %s", version, want)
		out, err := b.Run(ctx, "test", "-x", leg.Virtiofsd())
		assert.NoError(t, err, "%s: %s", leg.Virtiofsd(), out)
		out, err = b.Run(ctx, BinaryPath, "version")
		assert.NoError(t, err, out)
		if leg == Debian13 {
			out, err := b.Run(ctx, "dpkg-query", "-W", "-f", "${Package} ${Status}\n", "virtiofsd-shim", "virtiofsd")
			require.NoError(t, err, out)
			assert.Contains(t, out, "virtiofsd-shim install ok installed")
			assert.Contains(t, out, "virtiofsd install ok installed")
		}
	})
}
