package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// poll is how often the hooks read the service's state while they wait;
// resend, how often release repeats its signal until the shim answers.
const (
	poll   = 20 * time.Millisecond
	resend = 500 * time.Millisecond
)

// Release is what the socket's stop runs (ExecStopPre=). The shim decides;
// Release only asks it (SIGUSR1 to the service's main process) and waits
// for the answer in the shim's typed state:
//
//   - let go: its virtiofsd had no client and is stopped; Release returns
//     once the service is inactive, so that a restart of the socket finds
//     it gone (systemd refuses to start a socket whose service runs);
//   - keeps serving: a VM is served (or queued on the socket); it goes on
//     until the VM disconnects, and no session follows on the old socket.
//     When the socket's job is a restart, Release defers the start (the
//     marker, see state.Deferral), then reads the state again: if the
//     session ended meanwhile, it waits for the service's end (resume has
//     then looked for the marker) and removes the marker, so that the
//     restart's own start goes ahead.
//
// It does nothing when no service runs, and returns an error when ctx ends
// first.
func Release(ctx context.Context, h Hook, m Manager, stderr io.Writer) error {
	unit := h.service()
	active, err := m.ActiveState(ctx, unit)
	if err != nil {
		return err
	}
	if done(active) {
		return nil
	}
	st, err := h.answer(ctx, m)
	if err != nil || st == nil {
		return err // nil, nil: the service ended
	}
	if st.Release != state.KeepsServing {
		return h.waitDone(ctx, m, "its virtiofsd, which has no client, to stop")
	}
	fmt.Fprintf(stderr, "%s serves a VM: it goes on until the VM disconnects\n", unit)
	if !restarting(ctx, m, h.socket()) {
		return nil
	}
	// systemd refuses to start a socket while its service runs ("Socket
	// service ... already active, refusing"). The marker makes the
	// socket's start a skipped condition instead (the restart succeeds),
	// and the service's ExecStopPost= (resume) starts the socket once the
	// VM has left.
	marker, err := h.marker()
	if err != nil {
		return err
	}
	enablement, err := m.UnitFileState(ctx, h.socket())
	if err != nil {
		return err
	}
	if err := state.WriteMarker(marker, state.Deferral{Since: time.Now().UTC(), UnitFileState: enablement}); err != nil {
		return fmt.Errorf("defer the socket's start: %w", err)
	}
	h.afterMarker()
	// Check again: resume runs once the shim has ended, and looks for the
	// marker then. A session still running now ends later, and its resume
	// sees the marker.
	if st, _, err := h.live(ctx, m); err == nil && st != nil && !st.Phase.Over() {
		fmt.Fprintf(stderr, "%s listens again, with its new settings, as soon as that VM disconnects\n", h.socket())
		return nil
	}
	// The session ended meanwhile: once the service has ended, resume has
	// either seen the marker (and queued the socket's start, which merges
	// with this restart) or not; either way the marker must go, so that
	// this restart starts the socket itself.
	if err := h.waitDone(ctx, m, "the session, which has just ended, to stop"); err != nil {
		return err
	}
	return state.RemoveMarker(marker)
}

// answer asks the shim to release the socket (SIGUSR1) and waits for its
// answer: its state, once it has one, or the state of a run that has
// ended, or nil when the service has. The signal goes only to a shim that
// has published its state, and so catches SIGUSR1 (main's first line):
// until then the service's main process may still be systemd's child
// setting up the sandbox, or Go's runtime starting, whom SIGUSR1 would
// kill or be ignored by. It is sent again every resend until the answer
// comes; one more to a shim that has answered changes nothing.
func (h Hook) answer(ctx context.Context, m Manager) (*state.State, error) {
	var sent time.Time
	for {
		st, published, err := h.live(ctx, m)
		if err != nil || st == nil || st.Release != state.NotAsked || st.Phase.Over() {
			return st, err
		}
		if published && time.Since(sent) >= resend {
			if err := m.KillMain(ctx, h.service(), syscall.SIGUSR1); err != nil {
				// It may have ended in between: read again.
				if st, _, serr := h.live(ctx, m); serr == nil && (st == nil || st.Phase.Over()) {
					return st, nil
				}
				return nil, fmt.Errorf("ask %s to release its socket: %w", h.service(), err)
			}
			sent = time.Now()
		}
		if err := h.sleep(ctx, fmt.Sprintf("%s did not answer the release (phase %s)", h.service(), st.Phase)); err != nil {
			return nil, err
		}
	}
}

// live reads the running service's state: nil when the service has ended.
// published tells whether the running shim has published it; a state file
// of an earlier run (another shim pid), or none yet, reads as a shim that
// is starting and has not answered.
func (h Hook) live(ctx context.Context, m Manager) (st *state.State, published bool, err error) {
	unit := h.service()
	active, err := m.ActiveState(ctx, unit)
	if err != nil {
		return nil, false, err
	}
	if done(active) {
		return nil, false, nil
	}
	pid, err := m.MainPID(ctx, unit)
	if err != nil {
		return nil, false, err
	}
	if pid == 0 {
		// The shim has exited; the service ends (ExecStopPost=).
		return &state.State{Instance: h.Instance, Phase: state.Ended}, false, nil
	}
	st, err = state.Load(h.Scope, h.env(), h.Instance)
	if err != nil {
		return nil, false, err
	}
	if !st.Live(pid) {
		return &state.State{Instance: h.Instance, ShimPID: pid, Phase: state.Starting}, false, nil
	}
	return st, true, nil
}

// waitDone waits until the service is inactive or failed.
func (h Hook) waitDone(ctx context.Context, m Manager, what string) error {
	for {
		active, err := m.ActiveState(ctx, h.service())
		if err != nil {
			return err
		}
		if done(active) {
			return nil
		}
		if err := h.sleep(ctx, fmt.Sprintf("waited for %s, %s still %s", what, h.service(), active)); err != nil {
			return err
		}
	}
}

func (h Hook) sleep(ctx context.Context, what string) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s: its virtiofsd may hold the old socket; stop it with systemctl stop %s", what, h.service())
	case <-time.After(poll):
		return nil
	}
}

// Standby is what a STANDBY=yes socket runs once it listens
// (ExecStartPost=): it queues the service's start and does not wait for it
// (the start is ordered after the socket's, which is running this hook).
func Standby(ctx context.Context, h Hook, m Manager) error {
	if err := m.Start(ctx, h.service()); err != nil {
		return fmt.Errorf("start %s: %w", h.service(), err)
	}
	return nil
}

// Deferred reads the instance's deferred-restart marker: nil when no
// restart of the socket waits.
func Deferred(h Hook) (*state.Deferral, error) {
	marker, err := h.marker()
	if err != nil {
		return nil, err
	}
	return state.ReadMarker(marker)
}

// ResumeError is a deferred restart that resume could not carry out: the
// marker stays, with the reason, for check to report.
type ResumeError struct {
	Socket string
	Err    error
}

func (e *ResumeError) Error() string {
	return fmt.Sprintf("start %s again after its deferred restart: %v (the socket stays down; see virtiofsd-shim check)", e.Socket, e.Err)
}

func (e *ResumeError) Unwrap() error { return e.Err }

// Resume is what the service runs when it has stopped (ExecStopPost=): when
// a restart of the socket was deferred (see Release), it starts the socket
// again, if the admin still wants it: not when the socket's enablement
// changed since (disable --now, mask) or a stop of it is queued; then it
// only removes the marker. The marker goes only once the start is queued;
// when that fails, it stays, with the error, and Resume returns a
// *ResumeError. connect reaches the manager, only when there is something
// to do.
func Resume(ctx context.Context, h Hook, connect func(context.Context) (Manager, func(), error), stderr io.Writer) error {
	marker, err := h.marker()
	if err != nil {
		return err
	}
	d, err := state.ReadMarker(marker)
	if err != nil || d == nil {
		return err // nil, nil: the common case, no restart was deferred
	}
	m, done, err := connect(ctx)
	if err != nil {
		return h.failResume(marker, d, err)
	}
	defer done()
	if why, err := h.unwanted(ctx, m, d); err != nil {
		return h.failResume(marker, d, err)
	} else if why != "" {
		fmt.Fprintf(stderr, "the session has ended; %s stays stopped: %s\n", h.socket(), why)
		return state.RemoveMarker(marker)
	}
	// Queued in this order, the socket's start waits for the service's stop
	// (between ordered units a stop goes first), which ends once this
	// command has: systemd refuses to start the socket before.
	if err := m.Stop(ctx, h.service()); err != nil {
		return h.failResume(marker, d, fmt.Errorf("stop %s: %w", h.service(), err))
	}
	if err := m.Start(ctx, h.socket()); err != nil {
		return h.failResume(marker, d, err)
	}
	fmt.Fprintf(stderr, "the session has ended: starting %s again, with its new settings\n", h.socket())
	return state.RemoveMarker(marker)
}

// unwanted tells why the admin no longer wants the socket started, "" when
// they still do.
func (h Hook) unwanted(ctx context.Context, m Manager, d *state.Deferral) (string, error) {
	job, err := m.JobType(ctx, h.socket())
	if err != nil {
		return "", err
	}
	if job == "stop" {
		return "a stop of it is queued", nil
	}
	enablement, err := m.UnitFileState(ctx, h.socket())
	if err != nil {
		return "", err
	}
	if enablement == "masked" || enablement == "masked-runtime" {
		return "it is masked", nil
	}
	if d.UnitFileState != "" && enablement != d.UnitFileState {
		return fmt.Sprintf("it was %s when its restart was deferred and is %s now (systemctl disable)", d.UnitFileState, enablement), nil
	}
	return "", nil
}

// failResume records why the deferred restart could not be carried out in
// the marker, which stays: the socket's start would be skipped anyway, and
// check reports it.
func (h Hook) failResume(marker string, d *state.Deferral, err error) error {
	d.ResumeError = err.Error()
	if werr := state.WriteMarker(marker, *d); werr != nil {
		err = errors.Join(err, werr)
	}
	return &ResumeError{Socket: h.socket(), Err: err}
}

// restarting tells whether the unit's job is a restart (rather than a stop).
func restarting(ctx context.Context, m Manager, unit string) bool {
	j, err := m.JobType(ctx, unit)
	return err == nil && (j == "restart" || j == "try-restart" || j == "reload-or-start")
}

func done(active string) bool { return active == "inactive" || active == "failed" }

func (h Hook) env() func(string) string {
	if h.Env != nil {
		return h.Env
	}
	return os.Getenv
}

// marker is the instance's deferred-restart marker (state.MarkerPath).
func (h Hook) marker() (string, error) {
	rt, err := h.Scope.RuntimeDir(h.env())
	if err != nil {
		return "", err
	}
	return state.MarkerPath(rt, h.Instance), nil
}

func (h Hook) afterMarker() {
	if h.AfterMarker != nil {
		h.AfterMarker()
	}
}

// ReloadError is a reload the shim refused, or that failed: its answer.
type ReloadError struct {
	Unit   string
	Answer state.ReloadAnswer
}

// ExitCode is reload's exit status when the shim refused or failed: 1,
// the conventional failure of a command (the exit status table is the
// service's, and says nothing of a reload, whose session goes on).
func (e *ReloadError) ExitCode() int { return 1 }

func (e *ReloadError) Error() string {
	kept := "; the VM's session goes on with its virtiofsd"
	if !e.Answer.Kept {
		kept = "; the VM's session was lost"
	}
	return fmt.Sprintf("reload of %s %s: %s%s", e.Unit, e.Answer.Result, e.Answer.Reason, kept)
}

// Reload is what the service's reload runs (ExecReload=): it asks the shim
// to swap virtiofsd under the running VM (SIGHUP to the service's main
// process, once) and waits for the shim's answer in its state: a reload
// answer numbered above the one it saw before it asked. It returns the
// answer, or a *ReloadError when the shim refused or failed, or an error
// when the service does not run or ctx ends first.
func Reload(ctx context.Context, h Hook, m Manager) (*state.ReloadAnswer, error) {
	st, published, err := h.live(ctx, m)
	for err == nil && st != nil && !published && !st.Phase.Over() {
		// A shim still starting catches SIGHUP only once it has published.
		if err := h.sleep(ctx, fmt.Sprintf("%s did not publish its state", h.service())); err != nil {
			return nil, err
		}
		st, published, err = h.live(ctx, m)
	}
	switch {
	case err != nil:
		return nil, err
	case st == nil || st.Phase.Over():
		return nil, fmt.Errorf("%s does not run, so there is nothing to reload: the next session starts the installed virtiofsd with the config as it is", h.service())
	}
	seen := 0
	if st.Reload != nil {
		seen = st.Reload.Seq
	}
	if err := m.KillMain(ctx, h.service(), syscall.SIGHUP); err != nil {
		return nil, fmt.Errorf("ask %s to reload: %w", h.service(), err)
	}
	for {
		st, _, err := h.live(ctx, m)
		switch {
		case err != nil:
			return nil, err
		case st == nil || st.Phase.Over():
			return nil, fmt.Errorf("%s ended before it answered the reload", h.service())
		case st.Reload != nil && st.Reload.Seq > seen:
			a := *st.Reload
			if a.Result != state.ReloadOK {
				return &a, &ReloadError{Unit: h.service(), Answer: a}
			}
			return &a, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not answer the reload in time (a swap waits for the new virtiofsd's readiness, READY_TIMEOUT): see journalctl -u %s", h.service(), h.service())
		case <-time.After(poll):
		}
	}
}
