// Package check validates an instance offline, as virtiofsd@NAME.service
// would start it, and says what it finds as typed findings: errors,
// warnings and facts.
package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/kballard/go-shellquote"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// Kind is how a finding weighs: an error keeps the instance from starting,
// a warning is a problem it would start with, a fact is what check found.
type Kind string

// The kinds.
const (
	Error   Kind = "error"
	Warning Kind = "warning"
	Fact    Kind = "fact"
)

// Finding is one thing check found. Code names it for scripts and never
// changes meaning; Message is for people, with the fix in its words.
type Finding struct {
	Kind Kind   `json:"kind"`
	Code string `json:"code"`
	// Label is a fact's name in the text output ("shared dir"), "" for
	// errors and warnings.
	Label   string `json:"label,omitempty"`
	Message string `json:"message"`
	File    string `json:"file,omitempty"` // the file concerned, if one is
	Line    int    `json:"line,omitempty"` // its 1-based line, if one is
	// Fix is the command or edit that resolves a problem, where one does.
	Fix string `json:"fix,omitempty"`
	// Content is the text of a generated drop-in (code drop-in).
	Content string `json:"content,omitempty"`
}

// Codes of the facts, in the order a report gives them. A later fact (can
// this instance be swapped live, and why not) is one more code.
const (
	CodeInstance     = "instance"
	CodeConfig       = "config"
	CodeSharedDir    = "shared-dir"
	CodeSocket       = "socket"
	CodeVirtiofsd    = "virtiofsd"
	CodeCapabilities = "capabilities"
	CodeMigration    = "migration"
	CodeLiveSwap     = "live-swap" // whether systemctl reload can swap virtiofsd under a running VM, and why not
	CodeFileHandles  = "file-handles"
	CodeOptions      = "options"
	CodeRootless     = "rootless"
	CodeTimeouts     = "timeouts"
	CodeCommand      = "command"
	CodeDropIn       = "drop-in" // one drop-in the generator makes: File, Content
	CodeCrash        = "crash"   // what a virtiofsd crash under a connected VM means for the instance
	CodeState        = "state"   // where the service is, from its state file
	CodeReady        = "ready"   // the last fact, when there is no error
)

// Codes of the warnings.
const (
	CodeSocketModeWide         = "socket-mode-wide"
	CodeSocketOwnerIgnored     = "socket-owner-ignored"
	CodeSocketUserUnknown      = "socket-user-unknown"
	CodeSocketGroupUnknown     = "socket-group-unknown"
	CodeDropInNotApplied       = "drop-in-not-applied"
	CodeDropInUnreadable       = "drop-in-unreadable"
	CodeDropInOutdated         = "drop-in-outdated"
	CodeDropInLeftBehind       = "drop-in-left-behind"
	CodeStateUnreadable        = "state-unreadable"
	CodeMarkerUnreadable       = "marker-unreadable"
	CodeDeferredRestartFailed  = "deferred-restart-failed"
	CodeDeferredRestartPending = "deferred-restart-pending"
	CodeDeferredRestartStale   = "deferred-restart-left-behind"
	CodeModcapsUnbounded       = "modcaps-unbounded"
	CodeThreadPoolC            = "thread-pool-c-virtiofsd"
	CodeOlderBinary            = "older-binary" // the running session's shim or virtiofsd file was replaced since it started (an upgrade)
)

// CodeDegraded is the error of a running session that is degraded:
// virtiofsd crashed under the VM and a fresh one serves it without its
// FUSE state. check exits non-zero (DegradedError) for it, so that
// monitoring counts the instance as failed.
const CodeDegraded = "degraded"

// Codes of the errors besides the config's own (config.CodeUnknownKey,
// config.CodeDuplicateKey, config.CodeBadValue, config.CodeMissingShared).
const (
	CodeConfigInvalid        = "config-invalid"        // another problem of the config file or name
	CodeVirtiofsdUnavailable = "virtiofsd-unavailable" // the binary is missing or unusable
	CodeOptionRefused        = "option-refused"        // the virtiofsd found cannot honour a key or argument
	CodeCannotStart          = "cannot-start"          // another reason
)

// Codes lists every code a finding can have besides the config's own, for
// the documentation's test.
func Codes() []string {
	return []string{
		CodeInstance, CodeConfig, CodeSharedDir, CodeSocket, CodeVirtiofsd, CodeCapabilities, CodeMigration,
		CodeFileHandles, CodeLiveSwap, CodeCrash, CodeOptions, CodeRootless, CodeTimeouts, CodeCommand, CodeDropIn, CodeState, CodeReady,
		CodeSocketModeWide, CodeSocketOwnerIgnored, CodeSocketUserUnknown, CodeSocketGroupUnknown,
		CodeDropInNotApplied, CodeDropInUnreadable, CodeDropInOutdated, CodeDropInLeftBehind,
		CodeStateUnreadable, CodeMarkerUnreadable, CodeDeferredRestartFailed, CodeDeferredRestartPending,
		CodeDeferredRestartStale, CodeModcapsUnbounded, CodeThreadPoolC, CodeOlderBinary, CodeDegraded,
		CodeConfigInvalid, CodeVirtiofsdUnavailable, CodeOptionRefused, CodeCannotStart,
		config.CodeUnknownKey, config.CodeDuplicateKey, config.CodeBadValue, config.CodeMissingShared,
	}
}

// Options says which instance to check, and how to look at the machine.
type Options struct {
	Scope     config.Scope
	Instance  string
	ConfigDir string // "" for the scope's
	// GeneratorDir is where systemd keeps the generator's output, to
	// compare with ("" for the scope's runtime folder's systemd/generator).
	GeneratorDir string
	Env          config.Env // os.Getenv when nil
	Versions     virtiofsd.VersionCache
	// ProcessExists tells whether a pid runs (nil: signal 0).
	ProcessExists func(pid int) bool
	// LookupUser and LookupGroup find an account by name (nil: os/user).
	LookupUser  func(name string) error
	LookupGroup func(name string) error
}

func (o *Options) defaults() {
	if o.Env == nil {
		o.Env = os.Getenv
	}
	if o.ProcessExists == nil {
		o.ProcessExists = processExists
	}
	if o.LookupUser == nil {
		o.LookupUser = func(n string) error { _, err := user.Lookup(n); return err }
	}
	if o.LookupGroup == nil {
		o.LookupGroup = func(n string) error { _, err := user.LookupGroup(n); return err }
	}
}

// Report is what check found about one instance.
type Report struct {
	Instance string    `json:"instance"`
	Scope    string    `json:"scope"`
	OK       bool      `json:"ok"` // no error: the service would start
	Findings []Finding `json:"findings"`
	// Systemctl is the command that manages the instance's units
	// ("systemctl", "systemctl --user").
	Systemctl string `json:"-"`
	// Config and Plan are what run would use; nil when an error stops check first.
	Config *config.Config `json:"-"`
	Plan   *plan.Plan     `json:"-"`
}

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

func (r *Report) fact(code, label, value string) {
	r.add(Finding{Kind: Fact, Code: code, Label: label, Message: value})
}

func (r *Report) warn(code, msg string, file string, line int, fix string) {
	r.add(Finding{Kind: Warning, Code: code, Message: msg, File: file, Line: line, Fix: fix})
}

// Errors are the report's error findings.
func (r *Report) Errors() []Finding { return r.ofKind(Error) }

// Warnings are the report's warning findings.
func (r *Report) Warnings() []Finding { return r.ofKind(Warning) }

func (r *Report) ofKind(k Kind) []Finding {
	var l []Finding
	for _, f := range r.Findings {
		if f.Kind == k {
			l = append(l, f)
		}
	}
	return l
}

// Run checks the instance. The report is never nil. The error is what
// stops the instance from starting (the same run would return, for
// exitcode.For), each of its problems also an error finding of the report;
// or a failure to look (the runtime folder unknown, for example).
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	s := o.Scope
	r := &Report{Instance: o.Instance, Scope: s.String(), Systemctl: "systemctl" + userFlag(s)}
	if o.ConfigDir == "" {
		dir, err := s.ConfigDir(o.Env)
		if err != nil {
			return r, r.refuse(err, CodeConfigInvalid)
		}
		o.ConfigDir = dir
	}
	cfg, err := config.Resolve(s, o.ConfigDir, o.Instance, nil)
	if err != nil {
		return r, r.refuse(err, CodeConfigInvalid)
	}
	r.Config = cfg
	p, err := plan.Make(ctx, cfg, s, o.Versions)
	if err != nil {
		code := CodeCannotStart
		switch exitcode.For(err) {
		case exitcode.Unavailable:
			code = CodeVirtiofsdUnavailable
		case exitcode.Config:
			code = CodeOptionRefused
		}
		return r, r.refuse(err, code)
	}
	r.Plan = p
	r.plan(s, cfg, p)
	r.socketAccounts(o, cfg)
	if err := r.dropIns(o, cfg); err != nil {
		return r, err
	}
	derr := r.state(o)
	if s == config.System {
		r.modcaps(cfg, p.Args)
	}
	r.threadPool(cfg, p.Version)
	if derr != nil {
		return r, derr
	}
	r.OK = true
	r.fact(CodeReady, "", "the socket is passed as fd 3 by systemd (virtiofsd@"+cfg.Instance+".socket)")
	return r, nil
}

// refuse records each problem of err as an error finding and returns err.
func (r *Report) refuse(err error, code string) error {
	problems := config.Problems(err)
	if len(problems) == 0 {
		r.add(Finding{Kind: Error, Code: code, Message: err.Error()})
		return err
	}
	for _, p := range problems {
		c := p.Code
		if c == "" {
			c = code
		}
		r.add(Finding{Kind: Error, Code: c, Message: p.Msg, File: p.File, Line: p.Line})
	}
	return err
}

// plan records what run would start.
func (r *Report) plan(s config.Scope, cfg *config.Config, p *plan.Plan) {
	r.fact(CodeInstance, "instance", cfg.Instance)
	r.fact(CodeConfig, "config", cfg.Path)
	r.fact(CodeSharedDir, "shared dir", cfg.SharedDir)
	unit := "virtiofsd@" + cfg.Instance + ".socket"
	if s == config.User {
		unit += ", systemctl --user"
	}
	r.fact(CodeSocket, "socket", fmt.Sprintf("%s (%s)", plan.SocketPath(s, cfg.Instance), unit))
	r.fact(CodeVirtiofsd, "virtiofsd", fmt.Sprintf("%s (%s)", p.Binary, p.Version))
	if f := p.Version.Features; f != nil {
		r.fact(CodeCapabilities, "capabilities", orNone(strings.Join(f, ", ")))
	}
	if p.Version.Flavor == virtiofsd.Rust {
		r.fact(CodeMigration, "migration", migrationSummary(cfg))
		r.fact(CodeFileHandles, "file handles", fileHandlesSummary(cfg))
	}
	if ok, why := plan.LiveSwap(p); ok {
		r.fact(CodeLiveSwap, "live swap", "yes: systemctl reload swaps virtiofsd under a running VM (the shim is its end of the socket)")
	} else {
		r.fact(CodeLiveSwap, "live swap", "no: "+why)
	}
	if ok, what := plan.CrashRecovery(p); ok {
		r.fact(CodeCrash, "crash", "recovered: "+what)
	} else {
		r.fact(CodeCrash, "crash", "not recovered: "+what)
	}
	if keys := optionKeys(cfg); keys != "" {
		r.fact(CodeOptions, "options", keys)
	}
	if p.Rootless {
		r.fact(CodeRootless, "rootless", fmt.Sprintf("uid %d, gid %d; UID_MAP %s, GID_MAP %s",
			p.UID, p.GID, plan.IDMapOrDefault(cfg.UIDMap), plan.IDMapOrDefault(cfg.GIDMap)))
	}
	r.fact(CodeTimeouts, "timeouts", fmt.Sprintf("ready %v, stop %v", p.ReadyTimeout, p.StopTimeout))
	r.fact(CodeCommand, "command", shellquote.Join(append([]string{p.Binary}, p.Args...)...))
}

// dropIns records the drop-ins the generator makes of the config, and
// warns where systemd's copies differ.
func (r *Report) dropIns(o Options, cfg *config.Config) error {
	files, err := generator.DropIns(o.Scope, cfg)
	if err != nil {
		return err
	}
	dir := o.GeneratorDir
	if dir == "" {
		var err error
		if dir, err = o.Scope.GeneratorDir(o.Env); err != nil {
			return err
		}
	}
	reload := r.Systemctl + " daemon-reload"
	var warnings []Finding
	for _, f := range files {
		path := filepath.Join(dir, f.Path)
		r.add(Finding{Kind: Fact, Code: CodeDropIn, Message: "what " + reload + " applies", File: path, Content: string(f.Content)})
		loaded, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			warnings = append(warnings, Finding{Kind: Warning, Code: CodeDropInNotApplied, File: path, Fix: reload,
				Message: fmt.Sprintf("%s does not exist: systemd has not applied this config yet; run %s "+
					"(and check that %s is installed)", path, reload, generator.Path(o.Scope))})
		case err != nil:
			warnings = append(warnings, Finding{Kind: Warning, Code: CodeDropInUnreadable, File: path,
				Message: fmt.Sprintf("cannot compare with %s: %v", path, err)})
		case !bytes.Equal(loaded, f.Content):
			warnings = append(warnings, Finding{Kind: Warning, Code: CodeDropInOutdated, File: path, Fix: reload,
				Message: fmt.Sprintf("%s differs: the config changed since the last daemon-reload; run %s", path, reload)})
		}
	}
	if stale := filepath.Join(dir, "virtiofsd@"+cfg.Instance+".socket.d", generator.DropInName); len(files) < 2 {
		if _, err := os.Stat(stale); err == nil {
			warnings = append(warnings, Finding{Kind: Warning, Code: CodeDropInLeftBehind, File: stale, Fix: reload,
				Message: fmt.Sprintf("%s still has socket settings the config no longer has: run %s", stale, reload)})
		}
	}
	r.Findings = append(r.Findings, warnings...)
	return nil
}

// socketAccounts warns of a socket mode wider than owner and group, and of
// socket owners that are ignored or unknown.
func (r *Report) socketAccounts(o Options, cfg *config.Config) {
	if cfg.SocketMode != nil && *cfg.SocketMode&^0o660 != 0 {
		r.warn(CodeSocketModeWide, fmt.Sprintf("SOCKET_MODE=%04o lets more than the socket's owner and group connect "+
			"(whoever connects gets the share, as root): use 0660 or narrower (%s:%d)", *cfg.SocketMode, cfg.Path, cfg.Line("SOCKET_MODE")),
			cfg.Path, cfg.Line("SOCKET_MODE"), "SOCKET_MODE=0660")
	}
	switch {
	case o.Scope == config.User && (cfg.SocketUser != "" || cfg.SocketGroup != ""):
		line := cfg.Line("SOCKET_USER")
		if line == 0 {
			line = cfg.Line("SOCKET_GROUP")
		}
		r.warn(CodeSocketOwnerIgnored, fmt.Sprintf("SOCKET_USER and SOCKET_GROUP are ignored for a user instance: its socket is yours, "+
			"created by your user manager; remove them from %s (SOCKET_MODE applies)", cfg.Path), cfg.Path, line, "")
	case cfg.SocketUser != "" && !isNumber(cfg.SocketUser):
		n := cfg.SocketUser
		if err := o.LookupUser(n); err != nil {
			r.warn(CodeSocketUserUnknown, fmt.Sprintf("SOCKET_USER=%s: no such user in /etc/passwd (%v): the socket will not start unless another name service knows it", n, err),
				cfg.Path, cfg.Line("SOCKET_USER"), "")
		}
	}
	if n := cfg.SocketGroup; o.Scope == config.System && n != "" && !isNumber(n) {
		if err := o.LookupGroup(n); err != nil {
			r.warn(CodeSocketGroupUnknown, fmt.Sprintf("SOCKET_GROUP=%s: no such group in /etc/group (%v): the socket will not start unless another name service knows it", n, err),
				cfg.Path, cfg.Line("SOCKET_GROUP"), "")
		}
	}
}

func isNumber(s string) bool { return strings.Trim(s, "0123456789") == "" }

// userFlag is " --user" for User, for the commands a message names.
func userFlag(s config.Scope) string {
	if f := s.Flag(); f != "" {
		return " " + f
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
