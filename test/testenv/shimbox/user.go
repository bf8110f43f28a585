package shimbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// User is a user of the box with a systemd user manager of their own
// (user@UID.service), for the rootless instances: everything a User runs,
// runs as that user inside the box.
type User struct {
	Box      *Box
	Name     string
	UID, GID int
	// Home is the user's home, under Box.Root: the same path on the host
	// and in the box, outside the host's /home.
	Home string
}

// AddUser creates a user in the box (useradd writes the box's /etc, an
// overlay, so the host's user list is untouched) with a home under Root, and
// starts their user manager.
func (b *Box) AddUser(ctx context.Context, name string) (*User, error) {
	// Root is 0700 (MkdirTemp): let the user reach their home and shares.
	if err := os.Chmod(b.Root, 0o755); err != nil {
		return nil, err
	}
	home := filepath.Join(b.Root, "home", name)
	if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
		return nil, err
	}
	if _, err := b.Run(ctx, "useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", "--user-group", name); err != nil {
		return nil, err
	}
	u := &User{Box: b, Name: name, Home: home}
	for _, id := range []struct {
		flag string
		dst  *int
	}{{"-u", &u.UID}, {"-g", &u.GID}} {
		out, err := b.Run(ctx, "id", id.flag, name)
		if err != nil {
			return nil, err
		}
		if *id.dst, err = strconv.Atoi(strings.TrimSpace(out)); err != nil {
			return nil, fmt.Errorf("id %s %s: %q: %w", id.flag, name, out, err)
		}
	}
	if _, err := b.Systemctl(ctx, "start", fmt.Sprintf("user@%d.service", u.UID)); err != nil {
		return nil, fmt.Errorf("start %s's user manager: %w", name, err)
	}
	// systemctl --user answers once the manager's private socket is there.
	var last error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, last = u.Systemctl(ctx, "is-system-running"); last == nil {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%s's user manager does not answer: %w", name, last)
}

// RuntimeDir is the user's $XDG_RUNTIME_DIR in the box.
func (u *User) RuntimeDir() string { return "/run/user/" + strconv.Itoa(u.UID) }

// getenv is the part of Env that config.Scope reads to build the user's
// paths.
func (u *User) getenv(name string) string {
	switch name {
	case "XDG_RUNTIME_DIR":
		return u.RuntimeDir()
	case "HOME":
		return u.Home
	}
	return ""
}

// Env is the environment of the user's login session.
func (u *User) Env() []string {
	return []string{
		"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name,
		"XDG_RUNTIME_DIR=" + u.RuntimeDir(),
		"DBUS_SESSION_BUS_ADDRESS=" + must(config.User.Bus(u.getenv)),
		"PATH=/usr/local/bin:/usr/bin:/bin",
	}
}

// Command makes a command that runs name as the user in the box, with the
// session's environment. setpriv execs it (no PAM session in between), and
// kills it with SIGKILL when the caller's thread ends.
func (u *User) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := []string{"--reuid=" + strconv.Itoa(u.UID), "--regid=" + strconv.Itoa(u.GID), "--init-groups",
		"--pdeathsig=KILL", "--", "env", "-i"}
	argv = append(append(append(argv, u.Env()...), name), args...)
	return u.Box.Command(ctx, "setpriv", argv...)
}

// Run runs name as the user and returns its combined output; a failure's
// error includes it.
func (u *User) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := u.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s as %s in the box: %w: %s", strings.Join(append([]string{name}, args...), " "), u.Name, err, out)
	}
	return string(out), nil
}

// Systemctl runs systemctl --user as the user.
func (u *User) Systemctl(ctx context.Context, args ...string) (string, error) {
	return u.Run(ctx, "systemctl", append([]string{"--user"}, args...)...)
}

// ConfigDir is the user's ~/.config/virtiofsd.
func (u *User) ConfigDir() string { return must(config.User.ConfigDir(u.getenv)) }

// Configure writes ~/.config/virtiofsd/<instance>.conf, the user's, mode
// 0644.
func (u *User) Configure(instance, content string) error {
	dir := u.ConfigDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, u.UID, u.GID); err != nil {
			return err
		}
	}
	path := filepath.Join(dir, instance+".conf")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Chown(path, u.UID, u.GID)
}

// Share makes a shared directory of the user's, under their home.
func (u *User) Share(name string) (string, error) {
	dir := filepath.Join(u.Home, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.Chown(dir, u.UID, u.GID)
}

// Socket is the path of the user's instance socket in the box
// (%t/virtiofsd/NAME.sock), as the user's own programs see it.
func (u *User) Socket(instance string) string {
	return must(config.User.SocketPath(u.getenv, instance))
}

// Journal is Box.Journal as the user: journalctl --user ARGS reads the
// user's own journal (journalctl --user -u virtiofsd@vm1.service).
func (u *User) Journal(ctx context.Context, args ...string) ([]JournalEntry, error) {
	return u.Box.journal(ctx, u.Command, append([]string{"--user"}, args...)...)
}
