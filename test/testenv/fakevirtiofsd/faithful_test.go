package fakevirtiofsd_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

func TestMain(m *testing.M) {
	fakevirtiofsd.Main() // the test binary doubles as the fake
	// What the shim does before it starts virtiofsd: nothing but fd 3
	// (the socket) is inherited. go test leaves descriptors open here.
	if entries, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range entries {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				syscall.CloseOnExec(fd)
			}
		}
	}
	os.Exit(m.Run())
}

// session is one virtiofsd, real or fake, on a fresh listening socket, its
// stderr read line by line.
type session struct {
	t     *testing.T
	fl    virtiofsd.Flavor // whose lines these are
	cmd   *exec.Cmd
	sock  string
	lines chan string
	seen  []string // transcript so far: one entry per line, then the exit
	hold  net.Conn // a client connection kept open until virtiofsd exits
}

func startSession(t *testing.T, fl virtiofsd.Flavor, bin string, env, args []string) *session {
	t.Helper()
	dir := testdir.Short(t)
	sock := filepath.Join(dir, "vm.sock")
	lf, err := vhostuser.Listen(sock)
	require.NoError(t, err)
	defer lf.Close()

	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{lf}
	r, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	s := &session{t: t, fl: fl, cmd: cmd, sock: sock, lines: make(chan string, 64)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return s
}

// record adds one line to the transcript: what the shim makes of it.
func (s *session) record(raw string) virtiofsd.Line {
	l := virtiofsd.Classify(s.fl, raw)
	s.seen = append(s.seen, fmt.Sprintf("%s/%d: %s", l.Event, l.Priority, l.Message))
	return l
}

// until reads lines until one carries event e.
func (s *session) until(e virtiofsd.Event) {
	s.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case raw, ok := <-s.lines:
			require.True(s.t, ok, "output ended before a %s line; so far:\n%s", e, strings.Join(s.seen, "\n"))
			if s.record(raw).Event == e {
				return
			}
		case <-timeout:
			s.t.Fatalf("no %s line within 10 s; so far:\n%s", e, strings.Join(s.seen, "\n"))
		}
	}
}

// end reads the rest of the output and the exit status.
func (s *session) end() []string {
	s.t.Helper()
	for raw := range s.lines {
		s.record(raw)
	}
	waited := make(chan struct{})
	go func() { s.cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		s.t.Fatalf("no exit within 10 s of the end of output; so far:\n%s", strings.Join(s.seen, "\n"))
	}
	if s.hold != nil {
		s.hold.Close()
	}
	st := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if st.Signaled() {
		s.seen = append(s.seen, "killed by "+st.Signal().String())
	} else {
		s.seen = append(s.seen, fmt.Sprintf("exit %d", st.ExitStatus()))
	}
	return s.seen
}

// scenario drives a session the same way for the real binary and the fake.
type scenario struct {
	name  string
	extra map[virtiofsd.Flavor][]string // extra arguments (a bad option); nil: none
	noDir bool                          // a SHARED_DIR that does not exist
	drive func(s *session)
	// rustOnly scenarios use options the C one does not have.
	rustOnly bool
	opts     func(o *virtiofsd.Options)
	// noDACReadSearch runs both without CAP_DAC_READ_SEARCH in their
	// bounding set, as the shipped unit does.
	noDACReadSearch bool
}

// withoutDACReadSearch is the command that runs a program with
// CAP_DAC_READ_SEARCH dropped from its bounding set (util-linux setpriv).
var withoutDACReadSearch = []string{"setpriv", "--bounding-set=-dac_read_search", "--"}

var scenarios = []scenario{
	{name: "client connects and hangs up", drive: func(s *session) {
		s.until(virtiofsd.Ready)
		c, err := vhostuser.Probe(s.sock, 10*time.Second)
		require.NoError(s.t, err)
		s.until(virtiofsd.Connected)
		c.Close()
	}},
	{name: "SIGTERM while waiting", drive: func(s *session) {
		s.until(virtiofsd.Ready)
		// Past the readiness line, in accept(): the C one loses a SIGTERM
		// sent between the two (the shim sends another; see launch).
		time.Sleep(200 * time.Millisecond)
		require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
	}},
	{name: "SIGTERM while serving", drive: func(s *session) {
		s.until(virtiofsd.Ready)
		c, err := vhostuser.Probe(s.sock, 10*time.Second)
		require.NoError(s.t, err)
		s.hold = c
		s.until(virtiofsd.Connected)
		// The C one logs its session loop's entry after the connection line.
		time.Sleep(200 * time.Millisecond)
		require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
	}},
	{name: "unknown option", extra: map[virtiofsd.Flavor][]string{
		virtiofsd.C: {"-o", "no_such_option"}, virtiofsd.Rust: {"--no-such-option"}}},
	{name: "compat option the Rust one refuses", extra: map[virtiofsd.Flavor][]string{
		virtiofsd.Rust: {"-o", "log_level=debug"}}},
	{name: "-o debug", extra: map[virtiofsd.Flavor][]string{
		virtiofsd.Rust: {"-o", "debug"}}},
	{name: "shared directory missing", noDir: true},
	// The shipped unit's bounding set lacks CAP_DAC_READ_SEARCH.
	{name: "inode file handles never, without CAP_DAC_READ_SEARCH", rustOnly: true, noDACReadSearch: true,
		drive: func(s *session) {
			s.until(virtiofsd.Ready)
			require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
		}},
	{name: "inode file handles prefer, without CAP_DAC_READ_SEARCH", rustOnly: true, noDACReadSearch: true,
		opts: func(o *virtiofsd.Options) { o.InodeFileHandles = "prefer" }},
	{name: "inode file handles mandatory, without CAP_DAC_READ_SEARCH", rustOnly: true, noDACReadSearch: true,
		opts: func(o *virtiofsd.Options) { o.InodeFileHandles = "mandatory" }},
	{name: "file-handles migration, without CAP_DAC_READ_SEARCH", rustOnly: true, noDACReadSearch: true,
		opts: func(o *virtiofsd.Options) { o.MigrationMode = "file-handles" }},
	{name: "inode file handles prefer, with CAP_DAC_READ_SEARCH", rustOnly: true,
		opts: func(o *virtiofsd.Options) { o.InodeFileHandles = "prefer" },
		drive: func(s *session) {
			s.until(virtiofsd.Ready)
			c, err := vhostuser.Probe(s.sock, 10*time.Second)
			require.NoError(s.t, err)
			s.until(virtiofsd.Connected)
			c.Close()
		}},
	{name: "migration keys accepted", rustOnly: true, opts: func(o *virtiofsd.Options) {
		o.MigrationMode, o.MigrationOnError, o.MigrationVerifyHandles, o.MigrationConfirmPaths = "find-paths", "guest-error", true, true
	}, drive: func(s *session) {
		s.until(virtiofsd.Ready)
		require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
	}},
	{name: "migration options virtiofsd refuses together", rustOnly: true, opts: func(o *virtiofsd.Options) {
		o.MigrationMode, o.MigrationConfirmPaths = "file-handles", true
	}},
}

// TestFakeBehavesAsTheRealVirtiofsd runs the fake and the real binary of
// each flavor side by side on the same scenarios, and compares what the
// shim sees: each line as virtiofsd.Classify reads it (event, priority,
// message without its timestamp), in order, and the exit status. A drift
// between the fake and the real binary fails here.
func TestFakeBehavesAsTheRealVirtiofsd(t *testing.T) {
	sdbox.RequireRoot(t) // the real ones' namespace sandboxes need root
	for _, fl := range []virtiofsd.Flavor{virtiofsd.C, virtiofsd.Rust} {
		t.Run(fl.String(), func(t *testing.T) {
			real := fakevirtiofsd.Real(t, fl)
			for _, sc := range scenarios {
				if (sc.extra != nil && sc.extra[fl] == nil) || (sc.rustOnly && fl != virtiofsd.Rust) {
					continue
				}
				t.Run(sc.name, func(t *testing.T) {
					share := t.TempDir()
					if sc.noDir {
						share = filepath.Join(share, "missing")
					}
					opts := virtiofsd.Options{SharedDir: share}
					if sc.opts != nil {
						sc.opts(&opts)
					}
					var args []string
					if fl == virtiofsd.Rust && opts.MigrationMode == "file-handles" && opts.MigrationConfirmPaths {
						// What the shim refuses itself (config), given to virtiofsd.
						a, err := virtiofsd.Args(fl, virtiofsd.Options{SharedDir: share})
						require.NoError(t, err)
						args = append(a, "--migration-mode=file-handles", "--migration-confirm-paths")
					} else {
						a, err := virtiofsd.Args(fl, opts)
						require.NoError(t, err)
						args = a
					}
					args = append(args, sc.extra[fl]...)
					env := virtiofsd.ChildEnv(os.Environ(), fl)

					transcript := func(bin string, env []string) []string {
						if sc.noDACReadSearch {
							s := startSession(t, fl, withoutDACReadSearch[0], env, append(append(slices.Clone(withoutDACReadSearch[1:]), bin), args...))
							if sc.drive != nil {
								sc.drive(s)
							}
							return s.end()
						}
						s := startSession(t, fl, bin, env, args)
						if sc.drive != nil {
							sc.drive(s)
						}
						return s.end()
					}
					want := transcript(real, env)
					got := transcript(os.Args[0], append(env, fakevirtiofsd.Env(fl.String(), fakevirtiofsd.Ready)...))
					assert.Equal(t, want, got, "the fake (got) against the real %s virtiofsd (want)", fl)
				})
			}
		})
	}
}

// A virtiofsd from 1.13.3 on defaults to --inode-file-handles=prefer: the
// fake of such a version, given no --inode-file-handles, fails under the
// shipped unit's bounding set exactly as the real 1.13.2 fails given
// prefer; and the shim's explicit never keeps it serving.
func TestFakeOfANewerVirtiofsdDefaultsToPrefer(t *testing.T) {
	sdbox.RequireRoot(t)
	real := fakevirtiofsd.Real(t, virtiofsd.Rust)
	share := t.TempDir()
	base := []string{"--fd=3", "--shared-dir=" + share, "--cache=auto", "--log-level=info"}
	env := virtiofsd.ChildEnv(os.Environ(), virtiofsd.Rust)
	run := func(bin string, env []string, args []string) []string {
		s := startSession(t, virtiofsd.Rust, withoutDACReadSearch[0], env, append(append(slices.Clone(withoutDACReadSearch[1:]), bin), args...))
		return s.end()
	}
	want := run(real, env, append(slices.Clone(base), "--inode-file-handles=prefer"))
	newer := append(slices.Clone(env), append(fakevirtiofsd.Env("rust", fakevirtiofsd.Ready), fakevirtiofsd.VersionEnv("1.13.3"))...)
	assert.Equal(t, want, run(os.Args[0], newer, base), "the fake of 1.13.3 with its default against the real 1.13.2 given prefer")
	assert.Contains(t, strings.Join(want, "\n"), "can't apply the child capabilities")

	args, err := virtiofsd.Args(virtiofsd.Rust, virtiofsd.Options{SharedDir: share})
	require.NoError(t, err)
	s := startSession(t, virtiofsd.Rust, withoutDACReadSearch[0], newer, append(append(slices.Clone(withoutDACReadSearch[1:]), os.Args[0]), args...))
	s.until(virtiofsd.Ready) // the shim's --inode-file-handles=never
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	s.end()
}

// The fake answers --print-capabilities as the real one does.
func TestFakePrintsTheRealCapabilities(t *testing.T) {
	sdbox.RequireRoot(t)
	for _, fl := range []virtiofsd.Flavor{virtiofsd.C, virtiofsd.Rust} {
		real := fakevirtiofsd.Real(t, fl)
		want, err := exec.Command(real, "--print-capabilities").Output()
		require.NoError(t, err)
		cmd := exec.Command(os.Args[0], "--print-capabilities")
		cmd.Env = append(os.Environ(), fakevirtiofsd.Env(fl.String(), fakevirtiofsd.Ready)...)
		got, err := cmd.Output()
		require.NoError(t, err)
		wf, err := virtiofsd.ParseCapabilities(want)
		require.NoError(t, err, "%s", want)
		gf, err := virtiofsd.ParseCapabilities(got)
		require.NoError(t, err, "%s", got)
		assert.Equal(t, wf, gf, fl.String())
	}
}

// TestRealVirtiofsdEventLinesAtEveryLevel: the real binaries' readiness,
// connection and hang-up lines, at each LOG_LEVEL the shim passes, are
// events exactly as virtiofsd.Classify reads them (the C one's debug
// prefix included), and come in that order, once each.
func TestRealVirtiofsdEventLinesAtEveryLevel(t *testing.T) {
	sdbox.RequireRoot(t) // the real ones' namespace sandboxes need root
	for _, fl := range []virtiofsd.Flavor{virtiofsd.C, virtiofsd.Rust} {
		levels := []string{"info", "debug"}
		if fl == virtiofsd.Rust {
			levels = append(levels, "trace")
		}
		for _, level := range levels {
			t.Run(fl.String()+"/"+level, func(t *testing.T) {
				real := fakevirtiofsd.Real(t, fl)
				args, err := virtiofsd.Args(fl, virtiofsd.Options{SharedDir: t.TempDir(), LogLevel: level})
				require.NoError(t, err)
				s := startSession(t, fl, real, virtiofsd.ChildEnv(os.Environ(), fl), args)
				s.until(virtiofsd.Ready)
				c, err := vhostuser.Probe(s.sock, 10*time.Second)
				require.NoError(t, err)
				s.until(virtiofsd.Connected)
				c.Close()
				s.until(virtiofsd.Disconnected)
				seen := s.end()
				var events []string
				for _, l := range seen {
					if ev, _, ok := strings.Cut(l, "/"); ok && ev != virtiofsd.NoEvent.String() {
						events = append(events, ev)
					}
				}
				assert.Equal(t, []string{"ready", "connected", "disconnected"}, events, "%s", strings.Join(seen, "\n"))
				assert.Equal(t, "exit 0", seen[len(seen)-1])
			})
		}
	}
}
