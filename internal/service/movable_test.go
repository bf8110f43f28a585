package service

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

func rustPlan(cfg *config.Config) *plan.Plan {
	return &plan.Plan{Binary: "/usr/libexec/virtiofsd", Config: cfg,
		Version: virtiofsd.Version{Flavor: virtiofsd.Rust, Number: "1.13.2", Features: []string{virtiofsd.FeatureMigratePrecopy}}}
}

// The state says whether a restart or reload would move the session now,
// and why not: the plan's reason (a thread pool) stands whatever the VM
// negotiates; otherwise the front's latest verdict does.
func TestTheStateSaysWhetherTheSessionCanMoveAsTheFrontsVerdictChanges(t *testing.T) {
	s, _, _ := crashSession(t)
	movable := func() (bool, string) {
		st := s.Instance.State.Current()
		return st.Movable, st.UnmovableReason
	}
	ok, why := movable()
	assert.False(t, ok)
	assert.Equal(t, state.UnmovableStarting, why)

	s.planMovable(rustPlan(parse(t, "SHARED_DIR=/srv/vm1\n")))
	ok, why = movable()
	assert.True(t, ok, "no VM yet: a restart cuts nothing")
	assert.Empty(t, why)

	s.frontSwappable(false, "virtiofsd has not negotiated REPLY_ACK")
	ok, why = movable()
	assert.False(t, ok)
	assert.Equal(t, "virtiofsd has not negotiated REPLY_ACK", why)
	s.frontSwappable(true, "")
	ok, _ = movable()
	assert.True(t, ok, "the state transfer is negotiated")
	s.frontSwappable(false, "dirty logging is on (a live migration is under way); retry when it has ended")
	ok, why = movable()
	assert.False(t, ok)
	assert.Contains(t, why, "live migration")
	s.frontSwappable(true, "")

	s.planMovable(rustPlan(parse(t, "SHARED_DIR=/srv/vm1\nTHREAD_POOL_SIZE=4\n")))
	ok, why = movable()
	assert.False(t, ok)
	assert.Contains(t, why, "THREAD_POOL_SIZE=4: a live swap is not known to be safe with a thread pool")
	s.frontSwappable(false, "the VM sent REQUEST(99), which the front does not know")
	_, why = movable()
	assert.Contains(t, why, "THREAD_POOL_SIZE", "the plan's reason first")

	s.planMovable(rustPlan(parse(t, "SHARED_DIR=/srv/vm1\nFRONT=no\n")))
	ok, why = movable()
	assert.False(t, ok)
	assert.Contains(t, why, "FRONT=no")
}

func TestAnEndedRunIsNotMovable(t *testing.T) {
	w := state.NewWriter("", "vm1", 1)
	w.Update(func(s *state.State) { s.Movable, s.UnmovableReason = true, "" })
	Finish(w, nil, 0)
	got := w.Current()
	assert.False(t, got.Movable)
	assert.Equal(t, "the service has ended", got.UnmovableReason)
}
