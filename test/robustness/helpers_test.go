package robustness

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
)

// virtiofsds lists the virtiofsd processes serving a share under root.
func virtiofsds(root string) []proctree.Proc {
	var out []proctree.Proc
	for _, p := range proctree.All() {
		if p.Comm == "virtiofsd" && strings.Contains(p.Cmdline, root) {
			out = append(out, p)
		}
	}
	return out
}

// shims lists the virtiofsd-shim processes inside box b.
func shims(b *shimbox.Box) []proctree.Proc {
	var out []proctree.Proc
	for _, pid := range b.Processes() {
		if p, ok := proctree.Read(pid); ok && p.State != "Z" && p.Comm == "virtiofsd-shim" {
			out = append(out, p)
		}
	}
	return out
}

// show reads one property of a unit in the box; empty when systemctl
// fails.
func show(ctx context.Context, b *shimbox.Box, unit, prop string) string {
	v, _ := unitprop.Property(ctx, b, unit, prop)
	return v
}

// waitFor polls cond every 50 ms until it holds or d passes; it fails the
// test with what cond last saw.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ok, seen := cond()
		assert.True(c, ok, "last seen: %s", seen)
	}, d, 50*time.Millisecond, what)
}

// waitEnded waits until unit is no longer active or activating, and
// returns its ActiveState then: inactive or failed.
func waitEnded(t *testing.T, ctx context.Context, b *shimbox.Box, unit string, d time.Duration) string {
	t.Helper()
	state, err := unitprop.WaitInactive(ctx, b, unit, d)
	require.NoError(t, err)
	return state
}

// journal returns the box's journal for the given journalctl match
// arguments, as message text, or why journalctl could not tell.
func journal(ctx context.Context, b *shimbox.Box, args ...string) string {
	entries, err := b.Journal(ctx, args...)
	if err != nil {
		return err.Error()
	}
	return strings.Join(shimbox.Messages(entries), "\n")
}
