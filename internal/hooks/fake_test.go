package hooks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// fakeSystemd is a Manager whose units a test sets, with a fake shim that
// publishes its typed state as the real one does. Each hook (onKill,
// onEnablement, ...) runs inside the call, so a test forces an interleaving
// at an exact point of the protocol.
type fakeSystemd struct {
	t    *testing.T
	hook Hook
	mu   sync.Mutex

	active     map[string]string
	jobs       map[string]string
	enablement map[string]string
	mainPID    int
	shim       *state.Writer

	kills     int
	started   []string
	stopped   []string
	startErr  error
	onKill    func(n int) // the n-th SIGUSR1 (1, 2, ...) reached the shim
	onHUP     func()      // a SIGHUP (a reload request) reached the shim
	onEnabled func()      // UnitFileState is being read
	onMainPID func(n int) // MainPID is read for the n-th time
	mainPIDs  int
	onActive  func(n int) // ActiveState of the service is read for the n-th time
	actives   int
	// errs makes a method (by name: "ActiveState", "KillMain", ...) fail.
	errs       map[string]error
	resumeRuns int
}

const inst = "vm1"

func newFake(t *testing.T) *fakeSystemd {
	rt := t.TempDir()
	h := Hook{Instance: inst, Scope: config.User, Env: func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return rt
		}
		return ""
	}}
	f := &fakeSystemd{t: t, hook: h,
		active:     map[string]string{h.service(): "inactive", h.socket(): "active"},
		jobs:       map[string]string{},
		enablement: map[string]string{h.socket(): "enabled"},
		errs:       map[string]error{},
	}
	return f
}

// startShim is a service run: the shim (pid 812) publishes phase.
func (f *fakeSystemd) startShim(phase state.Phase) {
	rt, err := f.hook.Scope.RuntimeDir(f.hook.Env)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.active[f.hook.service()] = "active"
	f.mainPID = 812
	f.shim = state.NewWriter(state.Path(rt, inst), inst, 812)
	f.mu.Unlock()
	f.shim.Update(func(s *state.State) { s.Phase, s.VirtiofsdPID = phase, 815 })
}

// servesThroughRestart is a shim serving a VM while its socket restarts:
// asked to release, it keeps serving.
func (f *fakeSystemd) servesThroughRestart() {
	f.startShim(state.Serving)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(int) { f.shimAnswers(true) }
}

// shimAnswers is what the shim does with a release, given whether a client
// is there.
func (f *fakeSystemd) shimAnswers(client bool) {
	f.shim.Update(func(s *state.State) {
		if client {
			s.Phase, s.Release = state.Serving, state.KeepsServing
			return
		}
		s.Phase, s.Release = state.Released, state.LetGo
	})
}

// sessionEnds: the VM left (or virtiofsd was stopped): the shim publishes
// the end and exits; the service runs its ExecStopPost= (resume) and ends.
func (f *fakeSystemd) sessionEnds() {
	f.shim.Update(func(s *state.State) { s.Phase, s.VirtiofsdPID = state.Ended, 0 })
	f.mu.Lock()
	f.mainPID = 0
	f.active[f.hook.service()] = "deactivating"
	f.mu.Unlock()
	f.resumeRuns++
	if err := Resume(context.Background(), f.hook, f.connect, discard{}); err != nil {
		f.t.Logf("resume: %v", err)
	}
	f.mu.Lock()
	f.active[f.hook.service()] = "inactive"
	f.mu.Unlock()
}

func (f *fakeSystemd) connect(context.Context) (Manager, func(), error) { return f, func() {}, nil }

func (f *fakeSystemd) marker() string {
	m, err := f.hook.marker()
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// fail is the error a test set for method, nil when none.
func (f *fakeSystemd) fail(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[method]
}

func (f *fakeSystemd) ActiveState(_ context.Context, unit string) (string, error) {
	if err := f.fail("ActiveState"); err != nil {
		return "", err
	}
	f.mu.Lock()
	var n int
	hook := f.onActive
	if unit == f.hook.service() {
		f.actives++
		n = f.actives
	}
	f.mu.Unlock()
	if hook != nil && n > 0 {
		hook(n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active[unit], nil
}

func (f *fakeSystemd) MainPID(_ context.Context, unit string) (int, error) {
	if err := f.fail("MainPID"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.mainPIDs++
	n, hook := f.mainPIDs, f.onMainPID
	f.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if unit != f.hook.service() {
		return 0, fmt.Errorf("%s is no service", unit)
	}
	return f.mainPID, nil
}

func (f *fakeSystemd) UnitFileState(_ context.Context, unit string) (string, error) {
	if err := f.fail("UnitFileState"); err != nil {
		return "", err
	}
	if f.onEnabled != nil {
		hook := f.onEnabled
		f.onEnabled = nil
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enablement[unit], nil
}

func (f *fakeSystemd) JobType(_ context.Context, unit string) (string, error) {
	if err := f.fail("JobType"); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[unit], nil
}

func (f *fakeSystemd) KillMain(_ context.Context, unit string, sig syscall.Signal) error {
	f.mu.Lock()
	pid := f.mainPID
	f.kills++
	n := f.kills
	f.mu.Unlock()
	if sig != syscall.SIGUSR1 && sig != syscall.SIGHUP || unit != f.hook.service() {
		return fmt.Errorf("unexpected signal %v to %s", sig, unit)
	}
	if pid == 0 {
		return errors.New("No main process to kill")
	}
	if sig == syscall.SIGHUP {
		if f.onHUP != nil {
			f.onHUP()
		}
		return nil
	}
	if f.onKill != nil {
		f.onKill(n)
	}
	return f.fail("KillMain")
}

func (f *fakeSystemd) Start(_ context.Context, unit string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return f.startErr
	}
	f.started = append(f.started, unit)
	return nil
}

func (f *fakeSystemd) Stop(_ context.Context, unit string) error {
	if err := f.fail("Stop"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = append(f.stopped, unit)
	return nil
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
