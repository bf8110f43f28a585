// Package shimbox boots a private systemd with virtiofsd-shim's own unit
// files and binary installed, for system tests, the demo and benchmarks.
package shimbox

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/peer"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/sdbox"
)

// Where things are inside the box, as a package installs them.
const (
	BinaryPath = "/usr/libexec/virtiofsd-shim"
	// GeneratorPath is the systemd generator: the binary again, which acts
	// as the generator under this name (a symbolic link in the packages).
	GeneratorPath = "/usr/lib/systemd/system-generators/virtiofsd-shim-generator"
	ConfigDir     = "/etc/virtiofsd"
	SocketDir     = "/run/virtiofsd"
)

// RepoRoot is the source tree this package was built from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "../../.."))
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// Binary builds virtiofsd-shim once per test process into
// /var/tmp/virtiofsd-shim-test/<tree> (outside the box's private /tmp; one
// folder per source tree, so that checkouts tested side by side never run
// each other's build) and returns its path. Test processes of one tree
// running side by side build the same file and rename it into place, so a
// box that has the old one bind-mounted keeps it and nothing piles up. VIRTIOFSD_SHIM_BINARY overrides it with a prebuilt
// binary (an installed package's, say).
func Binary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv("VIRTIOFSD_SHIM_BINARY"); p != "" {
			builtBin = p
			return
		}
		dir := filepath.Join("/var/tmp/virtiofsd-shim-test", fmt.Sprintf("%x", sha256.Sum256([]byte(RepoRoot())))[:12])
		if buildErr = os.MkdirAll(dir, 0o755); buildErr != nil {
			return
		}
		tmp, err := os.CreateTemp(dir, ".build-*")
		if err != nil {
			buildErr = err
			return
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		// As make build and the packages build it.
		cmd := exec.Command(filepath.Join(RepoRoot(), "scripts", "build-binary.sh"), tmp.Name(), "test")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		builtBin = filepath.Join(dir, "virtiofsd-shim")
		buildErr = os.Rename(tmp.Name(), builtBin)
	})
	return builtBin, buildErr
}

// Units returns the project's unit files, by name, from units/, or from the
// folder in VIRTIOFSD_SHIM_UNITS (e.g. /usr/lib/systemd/system, to test what
// a package installed).
func Units() (map[string]string, error) {
	dir := os.Getenv("VIRTIOFSD_SHIM_UNITS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "units")
	}
	units := map[string]string{}
	for _, name := range []string{"virtiofsd@.socket", "virtiofsd@.service"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		units[name] = string(b)
	}
	return units, nil
}

// Box is a private systemd with the shim installed, plus a host folder
// (Root, under /var/tmp) for shared directories the box can see.
type Box struct {
	*sdbox.Box
	Root string
}

// Options adds to sdbox.Options.
type Options struct {
	Name string
	// Units, when set, replaces the project's unit files (for a bare
	// virtiofsd unit in benchmarks, say); extra units are added.
	ExtraUnits map[string]string
	Log        io.Writer
}

// Boot boots a box with the project's units in /run/systemd/system, the
// binary at /usr/libexec/virtiofsd-shim, the generator at GeneratorPath and
// an empty /etc/virtiofsd.
func Boot(ctx context.Context, o Options) (*Box, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	units, err := Units()
	if err != nil {
		return nil, err
	}
	for k, v := range o.ExtraUnits {
		units[k] = v
	}
	root, err := os.MkdirTemp("/var/tmp", "shimbox-")
	if err != nil {
		return nil, err
	}
	// The generator is the same binary under another name; a bind needs a
	// source of its own, and a symbolic link to the binary binds the binary.
	gen := filepath.Join(root, ".generator")
	if err := os.Symlink(bin, gen); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = "shimbox"
	}
	b, err := sdbox.Boot(ctx, sdbox.Options{
		Name:  name,
		Units: units,
		Tmpfs: []string{ConfigDir},
		Binds: map[string]string{bin: BinaryPath, gen: GeneratorPath},
		Log:   o.Log,
	})
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	return &Box{Box: b, Root: root}, nil
}

// New boots a box for a test and tears it down at its end; it skips, saying
// why, when not root.
func New(t testing.TB, o Options) *Box {
	t.Helper()
	sdbox.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Boot(ctx, o)
	if err != nil {
		t.Fatalf("boot a private systemd with virtiofsd-shim: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("tear the box down: %v", err)
		}
	})
	return b
}

// Close tears the box down and removes Root.
func (b *Box) Close() error {
	err := b.Box.Close()
	if rerr := os.RemoveAll(b.Root); err == nil {
		err = rerr
	}
	return err
}

// Share makes a shared directory under Root and returns its path.
func (b *Box) Share(name string) (string, error) {
	dir := filepath.Join(b.Root, name)
	return dir, os.MkdirAll(dir, 0o755)
}

// Configure writes /etc/virtiofsd/<instance>.conf inside the box, mode 0644.
func (b *Box) Configure(instance, content string) error {
	return b.WriteFile(filepath.Join(ConfigDir, instance+".conf"), []byte(content), 0o644)
}

// AddInstance makes a share named after the instance, configures it with
// SHARED_DIR and any extra lines, and returns the share.
func (b *Box) AddInstance(instance string, extra ...string) (string, error) {
	dir, err := b.Share(instance)
	if err != nil {
		return "", err
	}
	conf := "SHARED_DIR=" + dir + "\n" + strings.Join(extra, "\n")
	return dir, b.Configure(instance, conf+"\n")
}

// Systemctl runs systemctl inside the box.
func (b *Box) Systemctl(ctx context.Context, args ...string) (string, error) {
	return b.Run(ctx, "systemctl", args...)
}

// Socket is the host path that reaches an instance's socket inside the box.
func (b *Box) Socket(instance string) string {
	return b.Path(filepath.Join(SocketDir, instance+".sock"))
}

// Dial connects to an instance's socket like a VM would and checks that a
// live vhost-user backend answers GET_FEATURES (peer.Probe). The caller
// closes the connection, which ends the session.
func (b *Box) Dial(instance string, timeout time.Duration) (net.Conn, error) {
	return peer.Probe(b.Socket(instance), timeout)
}

// Session is Dial, then a wait for systemd to show the session: the
// instance's service active/running with its "Serving" status. virtiofsd
// answers within timeout; systemd gets 20 s more to catch up. The two are
// not ordered: virtiofsd accepts the moment it has printed its readiness
// line, while READY=1 and the status still pass through the shim and
// systemd, so a client can be answered while the unit is, for a moment,
// still activating.
func (b *Box) Session(instance string, timeout time.Duration) (net.Conn, error) {
	c, err := b.Dial(instance, timeout)
	if err != nil {
		return nil, err
	}
	unit := "virtiofsd@" + instance + ".service"
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		last, err = b.Systemctl(context.Background(), "show", "-p", "ActiveState,SubState,StatusText", unit)
		if err != nil {
			break
		}
		p := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(last), "\n") {
			k, v, _ := strings.Cut(line, "=")
			p[k] = v
		}
		if p["ActiveState"] == "active" && p["SubState"] == "running" && strings.HasPrefix(p["StatusText"], "Serving") {
			return c, nil
		}
	}
	c.Close()
	return nil, fmt.Errorf("%s answered, but systemd does not show it serving: %v\n%s", unit, err, last)
}

// JournalEntry is one entry of the box's journal: field name to value.
type JournalEntry map[string]string

// Journal returns the entries of the box's journal that match args
// (journalctl arguments: -u UNIT, FIELD=VALUE, ...), after journald has
// written what it was sent (journalctl --sync).
func (b *Box) Journal(ctx context.Context, args ...string) ([]JournalEntry, error) {
	if out, err := b.Run(ctx, "journalctl", "--sync"); err != nil {
		return nil, fmt.Errorf("journalctl --sync: %w: %s", err, out)
	}
	cmd := b.Command(ctx, "journalctl", append([]string{"--no-pager", "-o", "json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("journalctl %s: %w: %s", strings.Join(args, " "), err, stderr)
	}
	var entries []JournalEntry
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); !strings.HasPrefix(line, "{") {
			continue // blank, or a "-- No entries --" notice
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return nil, fmt.Errorf("read journalctl -o json output: %w: %q", err, line)
		}
		e := make(JournalEntry, len(raw))
		for k, v := range raw {
			e[k] = journalValue(v)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// journalValue decodes one field of journalctl -o json: a string, or an
// array of bytes for a value that is not valid UTF-8.
func journalValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var ints []int
	if json.Unmarshal(v, &ints) == nil {
		b := make([]byte, len(ints))
		for i, n := range ints {
			b[i] = byte(n)
		}
		return string(b)
	}
	return string(v)
}
