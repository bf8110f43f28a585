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

// show reads one property of a unit in the box.
func show(ctx context.Context, b *shimbox.Box, unit, prop string) string {
	out, _ := b.Systemctl(ctx, "show", "-p", prop, "--value", unit)
	return strings.TrimSpace(out)
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

// waitEnded waits until unit is no longer active or activating.
func waitEnded(t *testing.T, ctx context.Context, b *shimbox.Box, unit string, d time.Duration) string {
	t.Helper()
	var state string
	waitFor(t, d, unit+" ends", func() (bool, string) {
		state = show(ctx, b, unit, "ActiveState")
		return state == "inactive" || state == "failed", state
	})
	return state
}

// journal returns the box's journal for the given journalctl match
// arguments, as message text.
func journal(ctx context.Context, b *shimbox.Box, args ...string) string {
	out, _ := b.Run(ctx, "journalctl", append([]string{"--no-pager", "-o", "cat"}, args...)...)
	return out
}
