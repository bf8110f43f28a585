package systemtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
)

// scenario is a box with instances in every state list knows.
type scenario struct {
	box   *shimbox.Box
	kinds map[string]string // instance -> kind
	conns []net.Conn        // the serving instances' clients, kept open
}

// Kinds of instances in the scenario, with how many of each (30 in all).
var scenarioKinds = []struct {
	kind  string
	count int
}{
	{"listen", 8}, // enabled socket, nobody connected
	{"wait", 2},   // service started by hand, virtiofsd waiting for a client
	{"serve", 6},  // a client connected (virtiofsd serving it)
	{"fail", 4},   // SHARED_DIR missing, then a connection: a failing service
	{"conf", 5},   // config only, socket not enabled
	{"broken", 3}, // enabled socket, a config run refuses
	{"noconf", 2}, // enabled socket, no config file
}

func newScenario(t *testing.T) *scenario {
	// The failing instances must reach the shipped StartLimitBurst= (30
	// starts) however slowly a loaded machine runs them: a wide window.
	b := shimbox.New(t, shimbox.Options{ExtraUnits: map[string]string{
		"virtiofsd@.service.d/50-test-start-limit.conf": "[Unit]\nStartLimitIntervalSec=1h\n",
	}})
	ctx := t.Context()
	s := &scenario{box: b, kinds: map[string]string{}}
	var enable []string
	for _, k := range scenarioKinds {
		for i := range k.count {
			name := fmt.Sprintf("%s%02d", k.kind, i)
			s.kinds[name] = k.kind
			switch k.kind {
			case "fail":
				require.NoError(t, b.Configure(name, "SHARED_DIR="+filepath.Join(b.Root, "missing-"+name)+"\n"))
			case "broken":
				_, err := b.AddInstance(name, "CACHE=sometimes")
				require.NoError(t, err)
			case "noconf":
			default:
				_, err := b.AddInstance(name)
				require.NoError(t, err)
			}
			if k.kind != "conf" {
				enable = append(enable, "virtiofsd@"+name+".socket")
			}
		}
	}
	out, err := b.Systemctl(ctx, append([]string{"enable", "--now"}, enable...)...)
	require.NoError(t, err, out)
	var start []string
	for name, kind := range s.kinds {
		if kind == "wait" {
			start = append(start, "virtiofsd@"+name+".service")
		}
	}
	out, err = b.Systemctl(ctx, append([]string{"start"}, start...)...)
	require.NoError(t, err, out)
	for name, kind := range s.kinds {
		switch kind {
		case "serve":
			c, err := b.Session(name, 10*time.Second)
			require.NoError(t, err, name)
			s.conns = append(s.conns, c)
		case "fail":
			// The shim exits 78 at once; the pending connection makes
			// systemd start it again until the start limit stops both.
			c, err := net.Dial("unix", b.Socket(name))
			require.NoError(t, err, name)
			c.Close()
		}
	}
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
	})
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for name, kind := range s.kinds {
			if kind != "fail" {
				continue
			}
			active, err := unitprop.Property(ctx, b, "virtiofsd@"+name+".service", "ActiveState")
			if assert.NoError(c, err) {
				assert.Equal(c, "failed", active, name)
			}
		}
	}, 3*time.Minute, 100*time.Millisecond, "failing instances never reached failed")
	// Let the failed sockets settle too.
	require.Eventually(t, func() bool {
		out, _ := b.Systemctl(ctx, "list-jobs", "--no-legend")
		return strings.TrimSpace(out) == ""
	}, 30*time.Second, 50*time.Millisecond)
	return s
}

// show reads a unit's properties with systemctl, independently of this
// package; timestamps are in microseconds, UTC.
func (s *scenario) show(t *testing.T, unit string) map[string]string {
	t.Helper()
	out, err := s.box.Systemctl(context.Background(), "show", "--timestamp=us+utc",
		"-p", "LoadState,ActiveState,SubState,Result,MainPID,StatusText,ExecMainCode,ExecMainStatus,StateChangeTimestamp", unit)
	require.NoError(t, err, out)
	return unitprop.Parse(out)
}

// children lists a process's children inside the box, with pgrep.
func (s *scenario) children(t *testing.T, pid int) []int {
	out, _ := s.box.Run(context.Background(), "pgrep", "-P", strconv.Itoa(pid))
	var kids []int
	for _, f := range strings.Fields(out) {
		n, err := strconv.Atoi(f)
		require.NoError(t, err, out)
		kids = append(kids, n)
	}
	return kids
}

// check compares a row with what systemctl, pgrep and the files say.
// configDir is the config folder as the lister saw it.
func (s *scenario) check(t *testing.T, in instances.Instance, configDir string) {
	t.Helper()
	name, kind := in.Name, s.kinds[in.Name]
	require.NotEmpty(t, kind, "unexpected instance %s", name)

	conf := instances.Config{Path: filepath.Join(configDir, name+".conf"), Exists: kind != "noconf"}
	switch kind {
	case "fail":
		conf.SharedDir = ptr(filepath.Join(s.box.Root, "missing-"+name))
	case "noconf", "broken": // none, or one that does not parse
	default:
		conf.SharedDir = ptr(filepath.Join(s.box.Root, name))
	}
	assert.Equal(t, conf.Path, in.Config.Path, name)
	assert.Equal(t, conf.Exists, in.Config.Exists, name)
	assert.Equal(t, conf.SharedDir, in.Config.SharedDir, name)
	switch kind {
	case "fail":
		require.NotNil(t, in.Config.Error, name)
		assert.Contains(t, *in.Config.Error, "missing-"+name, name)
	case "broken":
		require.NotNil(t, in.Config.Error, name)
		assert.Contains(t, *in.Config.Error, "CACHE=sometimes", name)
	case "noconf":
		assert.Equal(t, ptr(conf.Path+": no such file"), in.Config.Error, name)
	default:
		assert.Nil(t, in.Config.Error, name)
	}

	if kind == "conf" {
		assert.Nil(t, in.Socket, name)
		assert.Nil(t, in.Service, name)
		assert.Empty(t, in.Failure, name)
		return
	}

	sock := s.show(t, "virtiofsd@"+name+".socket")
	require.NotNil(t, in.Socket, name)
	assert.Equal(t, instances.Unit{Unit: "virtiofsd@" + name + ".socket", LoadState: "loaded", ActiveState: sock["ActiveState"], SubState: sock["SubState"]}, in.Socket.Unit, name)
	wantSocket := map[string]string{"listen": "listening", "wait": "running", "broken": "listening", "noconf": "listening", "serve": "running", "fail": "failed"}[kind]
	assert.Equal(t, wantSocket, in.Socket.SubState, name)
	if kind == "fail" {
		assert.Equal(t, sock["Result"], in.Socket.Result, name)
		assert.Equal(t, "service-start-limit-hit", in.Socket.Result, name)
	} else {
		assert.Empty(t, in.Socket.Result, name)
	}

	svc := s.show(t, "virtiofsd@"+name+".service")
	require.NotNil(t, in.Service, name)
	se := in.Service
	assert.Equal(t, instances.Unit{Unit: "virtiofsd@" + name + ".service", LoadState: svc["LoadState"], ActiveState: svc["ActiveState"], SubState: svc["SubState"]}, se.Unit, name)
	assert.Equal(t, svc["Result"], se.Result, name)
	assert.Equal(t, svc["StatusText"], se.StatusText, name)
	if svc["StateChangeTimestamp"] == "" {
		assert.Nil(t, se.Since, name)
	} else {
		want, err := time.Parse("Mon 2006-01-02 15:04:05.000000 MST", svc["StateChangeTimestamp"])
		require.NoError(t, err)
		require.NotNil(t, se.Since, name)
		assert.True(t, want.Equal(*se.Since), "%s: since %v, systemctl says %v", name, se.Since, want)
	}
	code, _ := strconv.Atoi(svc["ExecMainCode"])
	status, _ := strconv.Atoi(svc["ExecMainStatus"])
	if code == 0 {
		assert.Nil(t, se.Exit, name)
	} else if assert.NotNil(t, se.Exit, name) {
		assert.Equal(t, instances.ExitOf(int64(code), status), *se.Exit, name)
	}

	switch kind {
	case "serve", "wait":
		mainPID, _ := strconv.Atoi(svc["MainPID"])
		assert.Equal(t, ptr(mainPID), se.MainPID, name)
		assert.Equal(t, "active", se.ActiveState, name)
		require.NotNil(t, se.State, name)
		assert.Equal(t, mainPID, se.State.ShimPID, name)
		assert.Equal(t, shimbox.SocketPath(name), se.State.Socket, name)
		if kind == "serve" {
			assert.Equal(t, ptr("connected"), se.Client, name)
			assert.Equal(t, shimstate.Serving, se.State.Phase, name)
		} else {
			assert.Equal(t, ptr("waiting"), se.Client, name)
			assert.Equal(t, shimstate.Waiting, se.State.Phase, name)
		}
		require.NotNil(t, se.VirtiofsdPID, name)
		assert.Equal(t, s.children(t, mainPID), []int{*se.VirtiofsdPID}, "%s: virtiofsd is the shim's child", name)
		assert.Empty(t, in.Failure, name)
	case "fail":
		if assert.NotNil(t, se.State, name) {
			assert.Equal(t, shimstate.Failed, se.State.Phase, name)
			require.NotNil(t, se.State.Failure, name)
			assert.Equal(t, 78, se.State.Failure.ExitCode, name)
		}
		assert.Nil(t, se.MainPID, name)
		assert.Nil(t, se.VirtiofsdPID, name)
		assert.Nil(t, se.Client, name)
		assert.Equal(t, "failed", se.ActiveState, name)
		// systemd 252 keeps the Result of the last run (exit-code) when
		// the start limit refuses the next one; the socket tells.
		assert.Equal(t, "exit-code", se.Result, name)
		require.NotNil(t, se.Exit, name)
		assert.Equal(t, instances.Exit{Code: "exited", Status: 78, Meaning: exitcode.Explain(78)}, *se.Exit, name)
		assert.Equal(t, "socket: service-start-limit-hit; service: exit-code, last exit exited 78 ("+exitcode.Explain(78)+")", in.Failure, name)
	default:
		assert.Equal(t, "inactive", se.ActiveState, name)
		assert.Nil(t, se.MainPID, name)
		assert.Nil(t, se.VirtiofsdPID, name)
		assert.Nil(t, se.Client, name)
		assert.Empty(t, in.Failure, name)
	}
}

// TestListShowsEveryInstanceOfARealSystemd lists 30 instances in mixed
// states, in this process over the box's D-Bus and with the real binary in
// the box over /run/systemd/private, as a table and as JSON.
func TestListShowsEveryInstanceOfARealSystemd(t *testing.T) {
	s := newScenario(t)
	b := s.box
	ctx := t.Context()

	bus, err := sdbus.Dial(b.SystemdBus)
	require.NoError(t, err)
	defer bus.Close()
	counter := &recordingBus{Bus: bus}
	l := instances.Lister{Bus: counter, ConfigDir: b.Path(shimbox.ConfigDir), ProcRoot: b.Path("/proc"), RuntimeDir: b.Path(shimbox.RuntimeDir()), Root: b.Path("/")}
	list, err := l.List(ctx, nil)
	require.NoError(t, err)
	require.Len(t, list, 30)
	for _, in := range list {
		s.check(t, in, b.Path(shimbox.ConfigDir))
	}
	roundTrips, messages := counter.counts()
	assert.Equal(t, 2, roundTrips)
	assert.Equal(t, 1+25+4, messages, "ListUnitsByPatterns, a GetAll per service and per failed socket")

	t.Run("binary --json", func(t *testing.T) {
		out, err := b.Run(ctx, shimbox.BinaryPath, "list", "--json")
		require.NoError(t, err, out)
		var doc instances.Document
		require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
		assert.Equal(t, 1, doc.SchemaVersion)
		require.Len(t, doc.Instances, 30)
		for _, in := range doc.Instances {
			s.check(t, in, shimbox.ConfigDir)
		}
	})

	t.Run("binary table", func(t *testing.T) {
		out, err := b.Run(ctx, shimbox.BinaryPath, "list")
		require.NoError(t, err, out)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.Len(t, lines, 31, out)
		assert.Regexp(t, `^INSTANCE +SOCKET +SERVICE +SINCE +PID +VIRTIOFSD +CLIENT +SHARED DIR +STATUS$`, lines[0])
		// The same rows, rendered from what the package read in this
		// process with the box's paths.
		list, err := l.List(ctx, nil)
		require.NoError(t, err)
		for i, in := range list {
			in.Config = fixConfigPath(in.Config, b.Path(shimbox.ConfigDir), shimbox.ConfigDir)
			fields := splitColumns(lines[0], lines[i+1])
			assert.Equal(t, instances.Row(in), fields, in.Name)
		}
	})

	t.Run("by name", func(t *testing.T) {
		out, err := b.Run(ctx, shimbox.BinaryPath, "list", "--json", "serve01", "conf02", "fail00")
		require.NoError(t, err, out)
		var doc instances.Document
		require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
		require.Len(t, doc.Instances, 3)
		assert.Equal(t, []string{"conf02", "fail00", "serve01"}, []string{doc.Instances[0].Name, doc.Instances[1].Name, doc.Instances[2].Name})
		for _, in := range doc.Instances {
			s.check(t, in, shimbox.ConfigDir)
		}
	})

	t.Run("unknown name", func(t *testing.T) {
		cmd := b.Command(ctx, shimbox.BinaryPath, "list", "serve01", "vm-nosuch")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit), "%v", err)
		assert.Equal(t, 64, exit.ExitCode())
		assert.Contains(t, stderr.String(), "no instance vm-nosuch")
		lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
		require.Len(t, lines, 2, stdout.String())
		assert.True(t, strings.HasPrefix(lines[1], "serve01 "), lines[1])
	})
}

// recordingBus records what a Lister asks of systemd: the number of D-Bus
// messages of each round trip (a ListUnitsByPatterns, a batch of GetAll).
type recordingBus struct {
	instances.Bus
	mu     sync.Mutex
	rounds []int
}

func (r *recordingBus) ListUnitsByPatterns(ctx context.Context, states, patterns []string) ([]sddbus.UnitStatus, error) {
	r.record(1)
	return r.Bus.ListUnitsByPatterns(ctx, states, patterns)
}

func (r *recordingBus) GetAll(ctx context.Context, reqs []sdbus.PropertiesRequest) []sdbus.PropertiesReply {
	if len(reqs) > 0 {
		r.record(len(reqs))
	}
	return r.Bus.GetAll(ctx, reqs)
}

func (r *recordingBus) record(messages int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rounds = append(r.rounds, messages)
}

// counts returns the round trips and the messages recorded.
func (r *recordingBus) counts() (roundTrips, messages int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.rounds {
		messages += n
	}
	return len(r.rounds), messages
}

// ptr points at a copy of v.
func ptr[T any](v T) *T { return &v }

// fixConfigPath shows a config read through the host path from as if read
// at to.
func fixConfigPath(c instances.Config, from, to string) instances.Config {
	c.Path = strings.Replace(c.Path, from, to, 1)
	if c.Error != nil {
		e := strings.ReplaceAll(*c.Error, from, to)
		c.Error = &e
	}
	return c
}

// splitColumns cuts a table line at the header's column starts.
func splitColumns(header, line string) []string {
	var starts []int
	for i := range header {
		if i == 0 || (header[i] != ' ' && header[i-1] == ' ' && (i < 2 || header[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	cells := make([]string, len(starts))
	for i, st := range starts {
		end := len(line)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		if st < len(line) {
			cells[i] = strings.TrimRight(line[st:min(end, len(line))], " ")
		}
	}
	return cells
}
