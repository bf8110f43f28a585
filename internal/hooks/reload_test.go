package hooks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// answersReload makes the fake shim answer each SIGHUP, after a while,
// with the next numbered answer built by answer.
func (f *fakeSystemd) answersReload(answer func(seq int) state.ReloadAnswer) {
	seq := 0
	if r := f.shim.Current().Reload; r != nil {
		seq = r.Seq
	}
	f.onHUP = func() {
		seq++
		a := answer(seq)
		go func() {
			time.Sleep(3 * poll)
			f.shim.Update(func(s *state.State) { s.Reload = &a })
		}()
	}
}

func TestReloadReturnsTheShimsAnswerToItsOwnRequest(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	// An earlier reload's answer is already there: not the one to return.
	f.shim.Update(func(s *state.State) {
		s.Reload = &state.ReloadAnswer{Seq: 4, Result: state.ReloadFailed, Reason: "old", Kept: true}
	})
	f.answersReload(func(seq int) state.ReloadAnswer {
		return state.ReloadAnswer{Seq: seq, Result: state.ReloadOK, Kept: true, OldPID: 815, NewPID: 900}
	})

	a, err := Reload(context.Background(), f.hook, f)
	require.NoError(t, err)
	assert.Equal(t, 5, a.Seq)
	assert.Equal(t, 900, a.NewPID)
}

func TestReloadFailsWithTheShimsReasonWhenItRefuses(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.answersReload(func(seq int) state.ReloadAnswer {
		return state.ReloadAnswer{Seq: seq, Result: state.ReloadRefused, Kept: true,
			Reason: "a live swap needs the Rust virtiofsd; the session goes on with its virtiofsd"}
	})

	_, err := Reload(context.Background(), f.hook, f)
	var re *ReloadError
	require.ErrorAs(t, err, &re)
	assert.EqualError(t, err, "reload of virtiofsd@vm1.service refused: a live swap needs the Rust virtiofsd; "+
		"the session goes on with its virtiofsd; the VM's session goes on with its virtiofsd")
}

func TestReloadOfAStoppedServiceSaysThereIsNothingToReload(t *testing.T) {
	f := newFake(t)
	_, err := Reload(context.Background(), f.hook, f)
	assert.ErrorContains(t, err, "does not run, so there is nothing to reload")
}

func TestReloadGivesUpWhenTheShimNeverAnswers(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	ctx, cancel := context.WithTimeout(context.Background(), 5*poll)
	defer cancel()
	_, err := Reload(ctx, f.hook, f)
	assert.ErrorContains(t, err, "did not answer the reload in time")
}

func TestAReloadRefusalExitsOne(t *testing.T) {
	err := &ReloadError{Unit: "virtiofsd@vm1.service", Answer: state.ReloadAnswer{Result: state.ReloadRefused, Kept: true}}
	assert.Equal(t, 1, exitcode.For(fmt.Errorf("reload: %w", err)))
}

func TestReloadSaysTheServiceEndedWhenTheShimStopsBeforeAnswering(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.onHUP = func() {
		go func() {
			time.Sleep(3 * poll)
			f.shim.Update(func(s *state.State) { s.Phase = state.Failed })
		}()
	}
	_, err := Reload(context.Background(), f.hook, f)
	assert.EqualError(t, err, "virtiofsd@vm1.service ended before it answered the reload")
}

func TestReloadFailsWithTheManagersErrorWhileItWaits(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.onHUP = func() {
		f.mu.Lock()
		f.errs["MainPID"] = fmt.Errorf("the bus went away")
		f.mu.Unlock()
	}
	_, err := Reload(context.Background(), f.hook, f)
	assert.ErrorContains(t, err, "the bus went away")
}
