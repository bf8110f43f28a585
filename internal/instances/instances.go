package instances

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// SchemaVersion is the version of the JSON document (see the package doc).
const SchemaVersion = 1

// Document is what `list --json` prints.
type Document struct {
	SchemaVersion int        `json:"schema_version"`
	Instances     []Instance `json:"instances"`
}

// Instance is one row: what systemd and the config folder know of one
// instance.
type Instance struct {
	Name    string   `json:"instance"`
	Socket  *Socket  `json:"socket"`  // nil: virtiofsd@NAME.socket not loaded
	Service *Service `json:"service"` // nil: virtiofsd@NAME.service not loaded
	Config  Config   `json:"config"`
	// DeferredRestart is the deferred-restart marker: a restart of the
	// socket waits for the session to end (see state.Deferral); nil when
	// none waits.
	DeferredRestart *state.Deferral `json:"deferred_restart"`
	// Failure explains a failed socket or service, a degraded session
	// (virtiofsd crashed under the VM: see state.Degraded), or a deferred
	// restart that did not happen, in words; "" otherwise. Monitoring
	// counts an instance with a Failure as failed.
	Failure string `json:"failure"`
}

// Unit is the state of one loaded unit.
type Unit struct {
	Unit        string `json:"unit"`         // virtiofsd@NAME.socket or .service
	LoadState   string `json:"load_state"`   // loaded, not-found, masked, error...
	ActiveState string `json:"active_state"` // active, inactive, failed, activating...
	SubState    string `json:"sub_state"`    // listening, running, dead, failed...
}

// Socket is virtiofsd@NAME.socket.
type Socket struct {
	Unit
	// Result is the socket's Result property (success, resources,
	// service-start-limit-hit, trigger-limit-hit...), read only when the
	// socket has failed; "" otherwise.
	Result string `json:"result"`
}

// Service is virtiofsd@NAME.service.
type Service struct {
	Unit
	// Since is when the service entered its current state (its
	// StateChangeTimestamp), nil when it never changed state.
	Since *time.Time `json:"since"`
	// Result is the service's Result property: success, exit-code,
	// signal, timeout, watchdog, start-limit-hit...
	Result string `json:"result"`
	// MainPID is the shim's pid (in systemd's pid namespace), nil when
	// the service runs no process.
	MainPID *int `json:"main_pid"`
	// VirtiofsdPID is the pid of the virtiofsd the shim started, nil
	// when unknown or none.
	VirtiofsdPID *int `json:"virtiofsd_pid"`
	// Client is "connected" while virtiofsd serves a VM, "waiting" while
	// it waits for one, "standby" while it waits for one before the VM
	// connects (STANDBY=yes), nil otherwise: read from State, when it is
	// the running shim's.
	Client *string `json:"client"`
	// State is the typed state the shim publishes (see package state):
	// the running shim's, or the last run's when none runs; nil when
	// there is none (or it could not be read: StateError).
	State      *state.State `json:"state"`
	StateError *string      `json:"state_error"`
	// StatusText is the STATUS= text the shim last sent to systemd, for
	// people: shown, never parsed. systemd keeps it after the service
	// ends (the table shows it only while the shim runs).
	StatusText string `json:"status_text"`
	// Exit is how the last main process ended, nil if none ever did.
	Exit *Exit `json:"exit"`
	// Older are the programs the running shim and its virtiofsd were
	// started from whose files have been replaced since (an upgrade): the
	// session runs binaries older than the installed ones. nil when none,
	// or when no shim runs.
	Older []Older `json:"older_binaries"`
}

// Older is a program a running session runs whose file has been replaced
// since it was started (see state.Binary.Replaced).
type Older struct {
	Program string `json:"program"` // "shim" or "virtiofsd"
	Path    string `json:"path"`
	Version string `json:"version"` // the running program's, "" if unknown
	Reason  string `json:"reason"`  // how its file changed
}

// olderBinaries are the programs of a running shim's record whose files
// have been replaced since it started them.
func olderBinaries(st *state.State, root string) []Older {
	var out []Older
	for _, r := range st.ReplacedIn(root) {
		out = append(out, Older{Program: r.Program, Path: r.Binary.Path, Version: r.Binary.Version, Reason: r.Reason})
	}
	return out
}

// Exit is how the service's main process (the shim) last ended.
type Exit struct {
	// Code is exited, killed or dumped (systemd's ExecMainCode).
	Code string `json:"code"`
	// Status is the exit status, or the signal number when killed or
	// dumped (ExecMainStatus).
	Status int `json:"status"`
	// Meaning explains Status from the shim's exit status table (or
	// names the signal).
	Meaning string `json:"meaning"`
}

// Config is what the config folder holds for the instance.
type Config struct {
	Path   string `json:"path"`   // CONFIG_DIR/NAME.conf
	Exists bool   `json:"exists"` // whether Path exists
	// SharedDir is the file's SHARED_DIR, nil when the file is missing
	// or cannot be parsed.
	SharedDir *string `json:"shared_dir"`
	// Error is why the shim would refuse the config (as `check` and
	// `run` would), nil when it is valid.
	Error *string `json:"error"`
}

// Unit name patterns.
const (
	unitPrefix    = "virtiofsd@"
	socketSuffix  = ".socket"
	serviceSuffix = ".service"
)

// UnknownError names instances asked for that are neither loaded in
// systemd nor configured.
type UnknownError struct {
	Names     []string
	ConfigDir string
}

func (e *UnknownError) Error() string {
	return fmt.Sprintf("no instance %s: no virtiofsd@NAME unit is loaded and there is no %s/NAME.conf (see \"virtiofsd-shim list\" for the known instances)",
		strings.Join(e.Names, ", "), e.ConfigDir)
}

// Lister lists instances.
type Lister struct {
	Bus Bus
	// ConfigDir is the folder of the config files; "" is config.DefaultDir.
	ConfigDir string
	// Scope is whose instances these are: it decides who may own a config
	// file (see config.LoadIn).
	Scope config.Scope
	// ProcRoot is the proc file system of systemd's pid namespace, used to
	// check and find virtiofsd's pid (see the package doc); "" does not
	// look at processes.
	ProcRoot string
	// RuntimeDir is the scope's runtime folder (/run, $XDG_RUNTIME_DIR) as
	// this process sees it, where the shims publish their state and the
	// deferred-restart markers are; "" reads neither.
	RuntimeDir string
	// Root is the file system the sessions' programs were started from,
	// as this process sees it ("" is /): where list looks whether they
	// were replaced since (see state.Binary.Replaced).
	Root string
}

// List returns the instances named, or all of them when names is empty:
// those with a loaded virtiofsd@NAME.socket or .service unit, in any state,
// and those with a NAME.conf in the config folder, sorted by name. It makes
// one ListUnitsByPatterns call, then one batch of GetAll calls (one per
// loaded service, one per failed socket) issued together. A config file
// that cannot be read is reported in the row, not as an error. Names that
// match nothing give an *UnknownError along with the instances found.
func (l *Lister) List(ctx context.Context, names []string) ([]Instance, error) {
	dir := l.ConfigDir
	if dir == "" {
		dir = config.DefaultDir
	}
	for _, n := range names {
		if err := config.ValidInstance(n); err != nil {
			return nil, err
		}
	}
	want := func(string) bool { return true }
	if len(names) > 0 {
		want = func(n string) bool { return slices.Contains(names, n) }
	}

	// Glob patterns would misread the backslashes of escaped names
	// (srv-vm\x2d1): ask for all virtiofsd@ units, filter here.
	units, err := l.Bus.ListUnitsByPatterns(ctx, nil, []string{unitPrefix + "*" + socketSuffix, unitPrefix + "*" + serviceSuffix})
	if err != nil {
		return nil, fmt.Errorf("list virtiofsd@ units: %w", err)
	}
	byName := map[string]*Instance{}
	row := func(name string) *Instance {
		in, ok := byName[name]
		if !ok {
			in = &Instance{Name: name}
			byName[name] = in
		}
		return in
	}
	var (
		reqs    []sdbus.PropertiesRequest
		targets []func(map[string]godbus.Variant)
	)
	for _, u := range units {
		name, kind, ok := splitUnitName(u.Name)
		if !ok || !want(name) {
			continue
		}
		in := row(name)
		unit := Unit{Unit: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState}
		switch kind {
		case socketSuffix:
			s := &Socket{Unit: unit}
			in.Socket = s
			if u.ActiveState == "failed" {
				reqs = append(reqs, sdbus.PropertiesRequest{Path: u.Path, Interface: "org.freedesktop.systemd1.Socket"})
				targets = append(targets, func(p map[string]godbus.Variant) { s.Result = str(p, "Result") })
			}
		case serviceSuffix:
			s := &Service{Unit: unit}
			in.Service = s
			// Unit (timestamps) and Service (pid, status, result)
			// properties in one call.
			reqs = append(reqs, sdbus.PropertiesRequest{Path: u.Path})
			targets = append(targets, func(p map[string]godbus.Variant) { s.fill(p) })
		}
	}
	for i, r := range l.Bus.GetAll(ctx, reqs) {
		if r.Err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// A unit unloaded since ListUnitsByPatterns is reported
			// with the state listed; anything else is an error.
			var derr godbus.Error
			if errors.As(r.Err, &derr) && derr.Name == "org.freedesktop.DBus.Error.UnknownObject" {
				continue
			}
			return nil, fmt.Errorf("read properties of %s: %w", reqs[i].Path, r.Err)
		}
		targets[i](r.Props)
	}

	configured, err := configNames(dir)
	if err != nil {
		return nil, err
	}
	for _, name := range configured {
		if want(name) {
			row(name)
		}
	}
	var unknown []string
	for _, n := range names {
		if byName[n] == nil && !slices.Contains(unknown, n) {
			unknown = append(unknown, n)
		}
	}

	procs := newProcView(l.ProcRoot)
	list := make([]Instance, 0, len(byName))
	for _, in := range byName {
		in.Config = readConfig(l.Scope, dir, in.Name)
		var statePID int
		if l.RuntimeDir != "" {
			l.readState(in)
		}
		if s := in.Service; s != nil {
			if s.MainPID != nil && s.State.Live(*s.MainPID) {
				statePID = s.State.VirtiofsdPID
				s.Older = olderBinaries(s.State, l.Root)
			}
			s.VirtiofsdPID = procs.virtiofsdPID(s.MainPID, statePID)
		}
		in.Failure = failure(in)
		list = append(list, *in)
	}
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.Name, b.Name) })
	if len(unknown) > 0 {
		return list, &UnknownError{Names: unknown, ConfigDir: dir}
	}
	return list, nil
}

// splitUnitName splits virtiofsd@NAME.socket into NAME and .socket.
func splitUnitName(unit string) (name, kind string, ok bool) {
	rest, ok := strings.CutPrefix(unit, unitPrefix)
	if !ok {
		return "", "", false
	}
	for _, k := range []string{socketSuffix, serviceSuffix} {
		if n, ok := strings.CutSuffix(rest, k); ok && n != "" {
			return n, k, true
		}
	}
	return "", "", false
}

// fill reads the Unit and Service properties the list shows.
func (s *Service) fill(p map[string]godbus.Variant) {
	if t := u64(p, "StateChangeTimestamp"); t != 0 {
		since := time.UnixMicro(int64(t)).UTC()
		s.Since = &since
	}
	s.Result = str(p, "Result")
	if pid := int(u64(p, "MainPID")); pid != 0 {
		s.MainPID = &pid
	}
	s.StatusText = str(p, "StatusText")
	if code := i64(p, "ExecMainCode"); code != 0 {
		status := int(i64(p, "ExecMainStatus"))
		exit := ExitOf(code, status)
		s.Exit = &exit
	}
}

// readState reads the instance's typed state and deferred-restart marker.
func (l *Lister) readState(in *Instance) {
	if s := in.Service; s != nil {
		st, err := state.Read(state.Path(l.RuntimeDir, in.Name))
		if err != nil {
			msg := err.Error()
			s.StateError = &msg
		}
		s.State = st
		if s.MainPID != nil && st.Live(*s.MainPID) {
			if c := st.Client(); c != "" {
				s.Client = &c
			}
		}
	}
	d, err := state.ReadMarker(state.MarkerPath(l.RuntimeDir, in.Name))
	if err == nil {
		in.DeferredRestart = d
	}
}

// str, u64 and i64 read a property, or its zero value when it is missing
// or of another type.
func str(p map[string]godbus.Variant, name string) string {
	s, _ := p[name].Value().(string)
	return s
}

func u64(p map[string]godbus.Variant, name string) uint64 {
	switch v := p[name].Value().(type) {
	case uint64:
		return v
	case uint32:
		return uint64(v)
	}
	return 0
}

func i64(p map[string]godbus.Variant, name string) int64 {
	switch v := p[name].Value().(type) {
	case int32:
		return int64(v)
	case int64:
		return v
	}
	return 0
}

// configNames lists the instances with a NAME.conf in dir; a missing
// folder has none.
func configNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config folder: %w", err)
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".conf")
		if ok && config.ValidInstance(name) == nil {
			names = append(names, name)
		}
	}
	return names, nil
}

// readConfig loads NAME.conf as run would; when that fails it still tries
// to read SHARED_DIR from it.
func readConfig(scope config.Scope, dir, name string) Config {
	c := Config{Path: filepath.Join(dir, name+".conf")}
	cfg, err := config.LoadIn(scope, dir, name)
	if err == nil {
		c.Exists = true
		c.SharedDir = &cfg.SharedDir
		return c
	}
	msg := err.Error()
	if _, serr := os.Lstat(c.Path); errors.Is(serr, fs.ErrNotExist) {
		msg = c.Path + ": no such file"
	} else {
		c.Exists = true
	}
	c.Error = &msg
	if f, err := os.Open(c.Path); err == nil {
		defer f.Close()
		if cfg, err := config.Parse(f, c.Path); err == nil {
			c.SharedDir = &cfg.SharedDir
		}
	}
	return c
}

// failure explains a failed socket or service.
func failure(in *Instance) string {
	var parts []string
	if s := in.Socket; s != nil && s.ActiveState == "failed" {
		parts = append(parts, "socket: "+orUnknown(s.Result))
	}
	if s := in.Service; s != nil && s.ActiveState == "failed" {
		p := "service: " + orUnknown(s.Result)
		if e := s.Exit; e != nil && !(e.Code == "exited" && e.Status == 0) {
			p += fmt.Sprintf(", last exit %s %d (%s)", e.Code, e.Status, e.Meaning)
		}
		parts = append(parts, p)
	}
	if s := in.Service; s != nil && s.MainPID != nil && s.State.Live(*s.MainPID) && s.State.Degraded != nil {
		d := s.State.Degraded
		parts = append(parts, fmt.Sprintf("service: degraded, virtiofsd crashed (last: %s; %d recoveries): the guest must umount and mount the share again, with nothing held open on it",
			d.LastEnd, d.Recoveries))
	}
	if d := in.DeferredRestart; d != nil {
		running := in.Service != nil && in.Service.MainPID != nil
		switch {
		case d.ResumeError != "":
			parts = append(parts, "socket: its deferred restart failed ("+d.ResumeError+"): see virtiofsd-shim check "+in.Name)
		case !running:
			parts = append(parts, "socket: a deferred restart was left behind, so the socket's start is skipped: see virtiofsd-shim check "+in.Name)
		}
	}
	return strings.Join(parts, "; ")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown result"
	}
	return s
}
