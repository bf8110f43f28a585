package main

import (
	"flag"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// instanceFlags are the flags run and check share: which instance, and
// per-key overrides of its config file.
type instanceFlags struct {
	instance  string
	configDir string
	user      bool // --user: an instance of the user's own manager
	// overrides maps config keys to flag names; set flags win over the file.
	overrides map[string]*string
}

// overridable are the config keys a run flag can override, by flag name.
var overridable = []struct{ flag, key, help string }{
	{"shared-dir", "SHARED_DIR", "`directory` to share (SHARED_DIR=)"},
	{"virtiofsd", "VIRTIOFSD", "virtiofsd `binary` (VIRTIOFSD=; default: first of /usr/libexec/virtiofsd, /usr/lib/virtiofsd, /usr/lib/qemu/virtiofsd, $PATH)"},
	{"flavor", "FLAVOR", "virtiofsd `flavor`: auto, c or rust (FLAVOR=; auto asks the binary's --version)"},
	{"cache", "CACHE", "cache `mode`: auto, always, never, metadata (CACHE=; metadata is Rust only)"},
	{"sandbox", "SANDBOX", "sandbox `mode`: namespace, chroot, none (SANDBOX=; none is Rust only)"},
	{"log-level", "LOG_LEVEL", "virtiofsd log `level`: info or debug (LOG_LEVEL=)"},
	{"ready-timeout", "READY_TIMEOUT", "how long virtiofsd may take to become ready (READY_TIMEOUT=; default 10s)"},
	{"stop-timeout", "STOP_TIMEOUT", "grace between SIGTERM and SIGKILL when stopping (STOP_TIMEOUT=; default 5s)"},
}

func (f *instanceFlags) register(fs *flag.FlagSet, withOverrides bool) {
	fs.StringVar(&f.instance, "instance", "", "instance `name`: reads CONFIG-DIR/NAME.conf")
	fs.StringVar(&f.configDir, "config-dir", "", "`folder` of the instance configs (default "+config.DefaultDir+
		", with --user $XDG_CONFIG_HOME/virtiofsd or ~/.config/virtiofsd)")
	fs.BoolVar(&f.user, "user", false, "an instance of your own user manager (systemctl --user): config in ~/.config/virtiofsd, "+
		"socket in $XDG_RUNTIME_DIR/virtiofsd, rootless Rust virtiofsd")
	if !withOverrides {
		return
	}
	f.overrides = map[string]*string{}
	for _, o := range overridable {
		f.overrides[o.key] = fs.String(o.flag, "", o.help)
	}
}

// load reads the instance's config, if any, with the flags that were given
// over it (config.Resolve).
func (f *instanceFlags) load(fs *flag.FlagSet) (*config.Config, error) {
	if f.configDir == "" {
		dir, err := f.scope().ConfigDir(os.Getenv)
		if err != nil {
			return nil, err
		}
		f.configDir = dir
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var overrides []config.Override
	for _, o := range overridable {
		if given[o.flag] {
			overrides = append(overrides, config.Override{Flag: o.flag, Key: o.key, Value: *f.overrides[o.key]})
		}
	}
	return config.Resolve(f.scope(), f.configDir, f.instance, overrides)
}

// scope is the service manager the instance belongs to.
func (f *instanceFlags) scope() config.Scope { return config.ScopeOf(f.user) }
