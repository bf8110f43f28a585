// Package state is the typed record of what one instance's service is
// doing: the shim alone writes it (atomically, in its runtime directory),
// and list, check, the hooks and the tests read it. STATUS= says the same
// for people; nothing parses that.
//
// The file is %t/virtiofsd-shim/NAME.json (%t: /run, or $XDG_RUNTIME_DIR
// for a user instance), one JSON object with "version": Version. A reader
// reads its own version and the older ones it knows (OldestVersion on),
// and refuses a newer one rather than misread it. A new field may be added
// without changing the version when its zero value reads right in an
// older file; otherwise the version is bumped, and Parse says what an
// older file's missing fields mean.
//
// Beside it, %t/virtiofsd/NAME.restart is the deferred-restart marker
// (virtiofsd@.socket: ConditionPathExists=!%t/virtiofsd/%i.restart), which
// only the hooks write (see Deferral), with a format version of its own
// (MarkerVersion). Path and MarkerPath are the only spelling of both paths.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// Version is the version of the state file's format. Version 2 added
// Movable, UnmovableReason, Shim and Virtiofsd: in a version 1 file a
// missing movable reads false, which would claim that its shim judged the
// session unmovable, so Parse marks such a record unmovable with the
// reason that its shim did not say (the shim of an older package still
// runs the session after an upgrade).
const Version = 2

// OldestVersion is the oldest format Parse reads.
const OldestVersion = 1

// Phase is where the service is: the one phase type of the shim. A
// virtiofsd session (launch) goes through the first three, as its lines
// tell; the service adds the others.
type Phase string

// The phases, in the order a run goes through them. A STANDBY=yes run goes
// back from Serving to Starting for each new session.
const (
	// Starting: the shim reads its config, or virtiofsd runs and has not
	// printed its readiness line yet.
	Starting Phase = "starting"
	// Waiting: virtiofsd waits for its client (a VM) on the socket.
	Waiting Phase = "waiting"
	// Serving: a client is connected.
	Serving Phase = "serving"
	// Stopping: systemd stops the service (SIGTERM): virtiofsd is being
	// stopped.
	Stopping Phase = "stopping"
	// Released: the socket was released (its unit stops) while virtiofsd
	// had no client: it is being stopped, and no session follows.
	Released Phase = "released"
	// Ended: the run is over and ended cleanly; the shim exits 0.
	Ended Phase = "ended"
	// Failed: the run is over and failed (see Failure).
	Failed Phase = "failed"
)

// Over tells whether the run has ended (no virtiofsd runs any more).
func (p Phase) Over() bool { return p == Ended || p == Failed }

// Release is the shim's answer to a release of its socket (SIGUSR1 from
// virtiofsd-shim release, the socket's ExecStopPre=).
type Release string

// The answers.
const (
	// NotAsked: no release was received in this run.
	NotAsked Release = ""
	// KeepsServing: a client is served (or queued on the socket): the
	// session goes on until it leaves, and no session follows it.
	KeepsServing Release = "keeps-serving"
	// LetGo: virtiofsd had no client: it is stopped (phase Released), and
	// the service ends.
	LetGo Release = "let-go"
)

// Failure is why a run failed.
type Failure struct {
	Reason   string `json:"reason"`    // the error, in words
	ExitCode int    `json:"exit_code"` // the shim's exit status (see exitcode)
}

// ReloadResult is how a reload request ended.
type ReloadResult string

// The results.
const (
	// ReloadOK: the session runs on a new virtiofsd (or, with no VM yet,
	// a new virtiofsd waits for it).
	ReloadOK ReloadResult = "ok"
	// ReloadRefused: nothing was tried, the session goes on as it was.
	ReloadRefused ReloadResult = "refused"
	// ReloadFailed: the swap was tried and failed (Kept says whether the
	// old virtiofsd kept the session).
	ReloadFailed ReloadResult = "failed"
)

// ReloadAnswer is the shim's answer to one reload request.
type ReloadAnswer struct {
	// Seq numbers the requests of the run, from 1; a client waits for a
	// Seq above the one it saw before it asked.
	Seq    int          `json:"seq"`
	Result ReloadResult `json:"result"`
	// Reason says why it was refused or failed, "" when ok.
	Reason string `json:"reason,omitempty"`
	// Kept: the running session goes on (always, unless Result is failed
	// and the old virtiofsd could not get its rings back).
	Kept bool `json:"kept"`
	// The handover's figures, when ok with a VM connected.
	OldPID      int     `json:"old_pid,omitempty"`
	NewPID      int     `json:"new_pid,omitempty"`
	PauseMillis float64 `json:"pause_ms,omitempty"`
	SaveMillis  float64 `json:"save_ms,omitempty"`
	LoadMillis  float64 `json:"load_ms,omitempty"`
	StateBytes  int     `json:"state_bytes,omitempty"`
	// Tries counts the swaps tried, when one was (a failed load with the
	// session kept is tried again on a fresh virtiofsd, up to 3 in all).
	Tries int `json:"tries,omitempty"`
}

// Degraded is a session served on after virtiofsd crashes.
type Degraded struct {
	// Recoveries counts the crashes the session was recovered from.
	Recoveries int `json:"recoveries"`
	// LastEnd is how the last crashed virtiofsd ended: "signal 9
	// (SIGKILL)", "exit status 1".
	LastEnd string `json:"last_end"`
	// Since is when the last recovery was.
	Since time.Time `json:"since"`
}

// State is one instance's record.
type State struct {
	Version  int    `json:"version"`
	Instance string `json:"instance"`
	// ShimPID is the pid of the shim that writes the file (the service's
	// MainPID while it runs): a reader that sees another MainPID, or none,
	// reads a past run's record.
	ShimPID int   `json:"shim_pid"`
	Phase   Phase `json:"phase"`
	// VirtiofsdPID is the running virtiofsd's pid, 0 when none runs.
	VirtiofsdPID int `json:"virtiofsd_pid"`
	// Session is the session's id (VIRTIOFSD_SESSION in the journal), ""
	// before the first one; SessionNumber counts the run's sessions.
	Session       string `json:"session"`
	SessionNumber int    `json:"session_number"`
	// Standby tells whether the run keeps a virtiofsd waiting between
	// sessions (STANDBY=yes).
	Standby bool `json:"standby"`
	// Socket and SharedDir are what the run serves, "" before it knows.
	Socket    string `json:"socket"`
	SharedDir string `json:"shared_dir"`
	// Release is the answer to a release of the socket, NotAsked if none.
	Release Release `json:"release"`
	// Failure is why the run failed (phase Failed), nil otherwise.
	Failure *Failure `json:"failure"`
	// Front tells whether the shim is the VM's end of the socket (FRONT=,
	// the installed virtiofsd able to save its state): reload swaps
	// virtiofsd under the VM then.
	Front bool `json:"front"`
	// Handovers counts the swaps onto a new virtiofsd in this session.
	Handovers int `json:"handovers"`
	// Degraded is set once virtiofsd crashed under the connected VM and a
	// fresh one serves it without its FUSE state (the guest's requests
	// fail with EBADF until it mounts the share again); nil otherwise. A
	// degraded session counts as failed for monitoring.
	Degraded *Degraded `json:"degraded,omitempty"`
	// Reload is the answer to the last reload request (SIGHUP, from
	// virtiofsd-shim reload), nil before the first.
	Reload *ReloadAnswer `json:"reload,omitempty"`
	// Movable says whether systemctl restart or reload would move the
	// session as it is now onto fresh binaries with the VM kept (no VM
	// connected yet counts, with the front); UnmovableReason says why not
	// (the front off, a thread pool, no state transfer negotiated, a
	// request the front does not know, a packed ring, a live migration
	// under way, a session starting or ending). A package upgrade restarts
	// only the movable sessions.
	Movable         bool   `json:"movable"`
	UnmovableReason string `json:"unmovable_reason,omitempty"`
	// Shim is the shim's own program, Virtiofsd the program of the
	// virtiofsd serving now, each as it was when it was started; nil when
	// unknown. Binary.Replaced tells whether an upgrade replaced it since.
	Shim      *Binary `json:"shim,omitempty"`
	Virtiofsd *Binary `json:"virtiofsd,omitempty"`
	// Updated is when the record was written.
	Updated time.Time `json:"updated"`
}

// Live tells whether the record is that of the running service whose
// main process is mainPID (0: none runs).
func (s *State) Live(mainPID int) bool {
	return s != nil && mainPID != 0 && s.ShimPID == mainPID
}

// Client is what the record says of the VM: "connected", "waiting",
// "standby" (waiting with STANDBY=yes), or "" (no virtiofsd, or stopping).
func (s *State) Client() string {
	switch {
	case s == nil:
		return ""
	case s.Phase == Serving:
		return "connected"
	case s.Phase == Waiting && s.Release == KeepsServing:
		return "connected" // queued on the socket, accepted next
	case s.Phase == Waiting && s.Standby:
		return "standby"
	case s.Phase == Waiting:
		return "waiting"
	}
	return ""
}

// Marshal encodes s in the file's format.
func Marshal(s *State) ([]byte, error) { return marshal(s, Version) }

func marshal(s *State, version int) ([]byte, error) {
	c := *s
	c.Version = version
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse decodes a state file of version OldestVersion to Version; a newer
// version (a newer shim's) or an unknown one is an error. A version 1
// record is unmovable: its shim did not say.
func Parse(b []byte) (*State, error) { return parse(b, Version) }

// UnmovableStarting is the UnmovableReason of a run or session that has
// not started virtiofsd yet.
const UnmovableStarting = "the session is starting"

// UnmovableV1 is the UnmovableReason of a version 1 record.
const UnmovableV1 = "its shim predates the movable record (state version 1, an older package), so whether a restart would keep its VM is unknown"

// parse is Parse for a reader of the given format version.
func parse(b []byte, version int) (*State, error) {
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("parse state: %w", err)
	}
	switch {
	case v.Version > version:
		return nil, fmt.Errorf("parse state: version %d, this virtiofsd-shim reads versions %d to %d: a newer virtiofsd-shim wrote it; use that one's list and check",
			v.Version, OldestVersion, version)
	case v.Version < OldestVersion:
		return nil, fmt.Errorf("parse state: version %d is no state file's (versions %d to %d); the shim alone writes it", v.Version, OldestVersion, version)
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse state: %w", err)
	}
	if s.Version < 2 {
		s.Movable, s.UnmovableReason = false, UnmovableV1
	}
	return &s, nil
}

// Read reads the state file at path: (nil, nil) when there is none.
func Read(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Load reads the state file of an instance of scope: (nil, nil) when there
// is none.
func Load(scope config.Scope, env config.Env, instance string) (*State, error) {
	rt, err := scope.RuntimeDir(env)
	if err != nil {
		return nil, err
	}
	return Read(Path(rt, instance))
}

// WriteFile writes b to path atomically: a temporary file in the same
// folder, renamed over path. A reader sees the old content or the new,
// never a part. It does not fsync: these files live in /run (tmpfs), gone
// at reboot anyway, and a shim that fails at every start writes twice per
// start.
func WriteFile(path string, b []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// Writer publishes one instance's record: the shim's only writer. Its
// methods are safe for concurrent use; each change is written at once.
type Writer struct {
	// Path is the state file; "" keeps the record in memory only (a shim
	// run by hand, outside systemd).
	Path string
	// Now stamps Updated; nil is time.Now.
	Now func() time.Time
	// OnError hears a failed write; nil ignores it.
	OnError func(error)

	mu      sync.Mutex
	cur     State
	written []byte // the record last written, nil before the first
}

// NewWriter starts the record of a run of the shim whose pid is pid.
func NewWriter(path, instance string, pid int) *Writer {
	return &Writer{Path: path, cur: State{Version: Version, Instance: instance, ShimPID: pid, Phase: Starting,
		UnmovableReason: UnmovableStarting}}
}

// Update applies change to the record and writes it. A change that leaves
// the record as last written is not written again, nor stamped: several
// parts of a session tell the same phase (virtiofsd's lines, the VM's
// accept), and a cold start's first reply waits behind each write.
func (w *Writer) Update(change func(*State)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	change(&w.cur)
	if w.written != nil {
		if b, err := Marshal(&w.cur); err == nil && bytes.Equal(b, w.written) {
			return
		}
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	w.cur.Updated = now().UTC()
	if w.Path == "" {
		return
	}
	err := w.write()
	if err != nil && w.OnError != nil {
		w.OnError(fmt.Errorf("write state %s: %w", w.Path, err))
	}
}

func (w *Writer) write() error {
	b, err := Marshal(&w.cur)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(w.Path), 0o755); err != nil {
		return err
	}
	if err := WriteFile(w.Path, b, 0o644); err != nil {
		return err
	}
	w.written = b
	return nil
}

// Current is a copy of the record.
func (w *Writer) Current() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}
