// Package plan turns an instance's config into virtiofsd's start: the
// binary, its flavor and version, its argv and timeouts, and the rootless
// rules; run starts what it plans, and check prints it.
package plan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// Plan is everything run needs to start virtiofsd, and check prints.
type Plan struct {
	Config       *config.Config
	Binary       string
	Version      virtiofsd.Version
	Args         []string
	ReadyTimeout time.Duration
	StopTimeout  time.Duration
	// Rootless: virtiofsd runs as UID/GID, not root (a user instance
	// started by a user other than root).
	Rootless bool
	UID, GID int
}

// Make finds the binary, its flavor and its argv for cfg, an instance of
// scope. versions detects the flavor; run caches it, check always asks the
// binary. A user instance not run by root is rootless.
func Make(ctx context.Context, cfg *config.Config, scope config.Scope, versions virtiofsd.VersionCache) (*Plan, error) {
	bin, err := virtiofsd.FindBinary(cfg.Virtiofsd)
	if err != nil {
		return nil, err
	}
	flavor, err := virtiofsd.ParseFlavor(cfg.Flavor)
	if err != nil {
		return nil, &config.Error{File: cfg.Path, Key: "FLAVOR", Msg: err.Error()}
	}
	rootless := scope == config.User && os.Geteuid() != 0
	v := virtiofsd.Version{Flavor: flavor}
	if flavor == virtiofsd.Auto {
		if v, err = versions.Detect(ctx, bin); err != nil && rootless {
			// Without root the C virtiofsd fails even --version
			// ("setgroups() failed"), so that is the likely cause.
			return nil, fmt.Errorf("%w; without root only the Rust virtiofsd runs: the C one cannot run without root, not even "+
				"for --version: if %s is the C one, %s", err, bin, virtiofsd.InstallRust)
		} else if err != nil {
			return nil, err
		}
	}
	opts := virtiofsd.Options{
		SharedDir: cfg.SharedDir,
		Cache:     cfg.Cache,
		Sandbox:   cfg.Sandbox,
		LogLevel:  cfg.LogLevel,
		Extra:     cfg.ExtraArgs,
	}
	if cfg.ThreadPoolSize != nil {
		opts.ThreadPoolSize = *cfg.ThreadPoolSize
	}
	opts.Xattr = isTrue(cfg.Xattr)
	opts.AnnounceSubmounts = isTrue(cfg.AnnounceSubmounts)
	opts.Readonly = isTrue(cfg.Readonly)
	opts.Unprivileged = rootless
	opts.InodeFileHandles = cfg.InodeFileHandles
	opts.MigrationMode = cfg.MigrationMode
	opts.MigrationOnError = cfg.MigrationOnError
	opts.MigrationVerifyHandles = isTrue(cfg.MigrationVerifyHandles)
	opts.MigrationConfirmPaths = isTrue(cfg.MigrationConfirmPaths)
	opts.PosixACL = cfg.PosixACL
	opts.SecurityLabel = cfg.SecurityLabel
	opts.TranslateUID = cfg.TranslateUID
	opts.TranslateGID = cfg.TranslateGID
	opts.AllowMmap = isTrue(cfg.AllowMmap)
	opts.Writeback = isTrue(cfg.Writeback)
	opts.NoReaddirplus = cfg.Readdirplus != nil && !*cfg.Readdirplus
	opts.PreserveNoatime = isTrue(cfg.PreserveNoatime)
	if v.Number == "" && v.Flavor == virtiofsd.Rust {
		// FLAVOR=rust skipped the detection, but the front (FRONT=auto)
		// and these keys depend on what this binary can do: ask it
		// (cached as run's detection is). Only the keys need the answer.
		needed := len(opts.Requirements()) > 0 || opts.PosixACL != "" || opts.SecurityLabel != ""
		d, err := versions.Detect(ctx, bin)
		switch {
		case err != nil && needed:
			return nil, fmt.Errorf("%w: the config's keys depend on what this virtiofsd can do", err)
		case err == nil:
			v.Number, v.Features = d.Number, d.Features
		}
	}
	opts.Version = v
	if cfg.UIDMap != nil {
		opts.UIDMap = cfg.UIDMap.String()
	}
	if cfg.GIDMap != nil {
		opts.GIDMap = cfg.GIDMap.String()
	}
	args, err := virtiofsd.Args(v.Flavor, opts)
	var oe *virtiofsd.OptionsError
	if errors.As(err, &oe) && cfg.Path != "" {
		// Point at the line that asked for it.
		return nil, &config.Error{File: cfg.Path, Line: cfg.Line(oe.Key), Key: oe.Key, Msg: oe.Msg, Err: err}
	}
	if err != nil {
		return nil, err
	}
	return &Plan{
		Config: cfg, Binary: bin, Version: v, Args: args,
		ReadyTimeout: orDefault(cfg.ReadyTimeout, config.DefaultReadyTimeout),
		StopTimeout:  orDefault(cfg.StopTimeout, config.DefaultStopTimeout),
		Rootless:     opts.Unprivileged, UID: os.Geteuid(), GID: os.Getegid(),
	}, nil
}

func isTrue(b *bool) bool { return b != nil && *b }

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// SocketPath is where the instance's socket unit listens, for messages.
func SocketPath(scope config.Scope, instance string) string {
	if instance == "" {
		return ""
	}
	p, err := scope.SocketPath(os.Getenv, instance)
	if err != nil {
		return "(unknown: " + err.Error() + ")"
	}
	return p
}

// IDMapOrDefault shows an ID map, or says there is none.
func IDMapOrDefault(m *config.IDMap) string {
	if m == nil {
		return "(own id)"
	}
	return m.String()
}

// CheckIDMapPrivileges refuses UID_MAP/GID_MAP under no_new_privs, which
// the user unit's sandbox sets: virtiofsd would run newuidmap/newgidmap,
// which are set-user-ID, and fail with "write to uid_map failed: Operation
// not permitted". status is the content of /proc/self/status.
func CheckIDMapPrivileges(cfg *config.Config, status string) error {
	if cfg.UIDMap == nil && cfg.GIDMap == nil {
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NoNewPrivs:"); ok && strings.TrimSpace(v) == "1" {
			key := "UID_MAP"
			if cfg.UIDMap == nil {
				key = "GID_MAP"
			}
			return &config.Error{File: cfg.Path, Line: cfg.Line(key), Key: key, Msg: fmt.Sprintf(
				"%s= needs newuidmap/newgidmap, which are set-user-ID, but this service runs with no_new_privs "+
					"(NoNewPrivileges= and the sandbox of the user unit virtiofsd@.service): add the drop-in that docs/rootless.md gives "+
					"(\"More than your own id\"; systemctl --user edit virtiofsd@%s.service), or remove %s=", key, cfg.Instance, key)}
		}
	}
	return nil
}

// SelfStatus reads /proc/self/status ("" when it cannot).
func SelfStatus() string {
	b, _ := os.ReadFile("/proc/self/status")
	return string(b)
}
