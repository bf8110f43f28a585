package instances

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// world is a fake systemd plus a config folder.
type world struct {
	bus  *fakeBus
	dir  string // config folder
	root string // shares
	run  string // the runtime folder: state files and markers
}

func newWorld(t *testing.T) *world {
	return &world{bus: &fakeBus{}, dir: t.TempDir(), root: t.TempDir(), run: t.TempDir()}
}

// publish writes the state a shim publishes.
func (w *world) publish(t *testing.T, st state.State) {
	t.Helper()
	wr := state.NewWriter(state.Path(w.run, st.Instance), st.Instance, st.ShimPID)
	var failed error
	wr.OnError = func(err error) { failed = err }
	wr.Update(func(s *state.State) { *s = st })
	require.NoError(t, failed)
}

// configure writes NAME.conf sharing a new directory, or content when given.
func (w *world) configure(t *testing.T, name string, content ...string) string {
	t.Helper()
	share := filepath.Join(w.root, name)
	require.NoError(t, os.MkdirAll(share, 0o755))
	text := "SHARED_DIR=" + share + "\n"
	if len(content) > 0 {
		text = strings.Join(content, "\n") + "\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(w.dir, name+".conf"), []byte(text), 0o644))
	return share
}

func (w *world) list(t *testing.T, names ...string) ([]Instance, error) {
	t.Helper()
	l := Lister{Bus: w.bus, ConfigDir: w.dir, RuntimeDir: w.run}
	return l.List(context.Background(), names)
}

func byName(list []Instance) map[string]Instance {
	m := map[string]Instance{}
	for _, in := range list {
		m[in.Name] = in
	}
	return m
}

func ptr[T any](v T) *T { return &v }

var since = time.Date(2026, 11, 27, 14, 0, 0, 123456000, time.UTC)

func TestListShowsEachInstanceSystemdKnowsOrIsConfigured(t *testing.T) {
	w := newWorld(t)
	shareServing := w.configure(t, "serving")
	w.bus.add("virtiofsd@serving.socket", "active", "running", nil)
	w.bus.add("virtiofsd@serving.service", "active", "running", map[string]any{
		"StateChangeTimestamp": uint64(since.UnixMicro()),
		"Result":               "success",
		"MainPID":              uint32(812),
		"StatusText":           "Serving a vhost-user client on /run/virtiofsd/serving.sock, sharing " + shareServing + " (virtiofsd pid 815)",
		"ExecMainCode":         int32(0),
		"ExecMainStatus":       int32(0),
	})
	w.publish(t, state.State{Instance: "serving", ShimPID: 812, Phase: state.Serving, VirtiofsdPID: 815})
	w.configure(t, "waiting")
	w.bus.add("virtiofsd@waiting.socket", "active", "running", nil)
	w.bus.add("virtiofsd@waiting.service", "active", "running", map[string]any{
		"StateChangeTimestamp": uint64(since.UnixMicro()),
		"MainPID":              uint32(900),
		"StatusText":           "Waiting for a vhost-user client on /run/virtiofsd/waiting.sock, sharing /x (virtiofsd pid 901)",
	})
	w.publish(t, state.State{Instance: "waiting", ShimPID: 900, Phase: state.Waiting, VirtiofsdPID: 901})
	w.configure(t, "standby")
	w.bus.add("virtiofsd@standby.socket", "active", "running", nil)
	w.bus.add("virtiofsd@standby.service", "active", "running", map[string]any{
		"StateChangeTimestamp": uint64(since.UnixMicro()),
		"MainPID":              uint32(910),
		"StatusText":           "Waiting for a vhost-user client on /run/virtiofsd/standby.sock, sharing /x (virtiofsd pid 911, standby for session 2)",
	})
	w.publish(t, state.State{Instance: "standby", ShimPID: 910, Phase: state.Waiting, VirtiofsdPID: 911, Standby: true, SessionNumber: 2})
	w.configure(t, "listening")
	w.bus.add("virtiofsd@listening.socket", "active", "listening", nil)
	w.bus.add("virtiofsd@listening.service", "inactive", "dead", map[string]any{
		"Result": "success", "ExecMainCode": int32(1), "ExecMainStatus": int32(0),
		"StateChangeTimestamp": uint64(since.UnixMicro()),
	})
	w.configure(t, "failed", "SHARED_DIR=/nonexistent/share")
	w.bus.add("virtiofsd@failed.socket", "failed", "failed", map[string]any{"Result": "service-start-limit-hit"})
	w.bus.add("virtiofsd@failed.service", "failed", "failed", map[string]any{
		"Result": "start-limit-hit", "ExecMainCode": int32(1), "ExecMainStatus": int32(78),
		"StateChangeTimestamp": uint64(since.UnixMicro()),
	})
	shareOnly := w.configure(t, "configured")
	w.configure(t, "broken", "SHARED_DIR=relative")
	w.bus.add("virtiofsd@noconfig.socket", "active", "listening", nil)

	list, err := w.list(t)
	require.NoError(t, err)
	var names []string
	for _, in := range list {
		names = append(names, in.Name)
	}
	assert.Equal(t, []string{"broken", "configured", "failed", "listening", "noconfig", "serving", "standby", "waiting"}, names, "sorted")
	m := byName(list)

	serving := m["serving"]
	assert.Equal(t, &Socket{Unit: Unit{"virtiofsd@serving.socket", "loaded", "active", "running"}}, serving.Socket)
	assert.Equal(t, &Service{
		Unit:         Unit{"virtiofsd@serving.service", "loaded", "active", "running"},
		Since:        ptr(since),
		Result:       "success",
		MainPID:      ptr(812),
		VirtiofsdPID: ptr(815),
		Client:       ptr("connected"),
		State:        serving.Service.State,
		StatusText:   "Serving a vhost-user client on /run/virtiofsd/serving.sock, sharing " + shareServing + " (virtiofsd pid 815)",
	}, serving.Service)
	require.NotNil(t, serving.Service.State)
	assert.Equal(t, state.Serving, serving.Service.State.Phase)
	assert.Equal(t, Config{Path: filepath.Join(w.dir, "serving.conf"), Exists: true, SharedDir: ptr(shareServing)}, serving.Config)
	assert.Empty(t, serving.Failure)

	assert.Equal(t, ptr("waiting"), m["waiting"].Service.Client)
	assert.Equal(t, ptr(901), m["waiting"].Service.VirtiofsdPID)
	assert.Equal(t, ptr("standby"), m["standby"].Service.Client)
	assert.Equal(t, ptr(911), m["standby"].Service.VirtiofsdPID)

	listening := m["listening"]
	assert.Equal(t, "listening", listening.Socket.SubState)
	assert.Nil(t, listening.Service.MainPID)
	assert.Nil(t, listening.Service.VirtiofsdPID)
	assert.Nil(t, listening.Service.Client)
	assert.Equal(t, &Exit{Code: "exited", Status: 0, Meaning: "clean end: the VM disconnected, or the service was stopped and virtiofsd stopped within the grace period"}, listening.Service.Exit)
	assert.Empty(t, listening.Failure)

	failed := m["failed"]
	assert.Equal(t, "service-start-limit-hit", failed.Socket.Result)
	assert.Equal(t, "start-limit-hit", failed.Service.Result)
	assert.Equal(t, 78, failed.Service.Exit.Status)
	assert.Contains(t, failed.Service.Exit.Meaning, "config: the instance config")
	assert.Equal(t, "socket: service-start-limit-hit; service: start-limit-hit, last exit exited 78 (config: the instance config or an option is invalid (missing file, unknown key, bad value, unsafe permissions))", failed.Failure)
	assert.Equal(t, ptr("/nonexistent/share"), failed.Config.SharedDir, "SHARED_DIR shown though Load refuses it")
	require.NotNil(t, failed.Config.Error)
	assert.Contains(t, *failed.Config.Error, "/nonexistent/share")

	configured := m["configured"]
	assert.Nil(t, configured.Socket)
	assert.Nil(t, configured.Service)
	assert.Equal(t, ptr(shareOnly), configured.Config.SharedDir)
	assert.Nil(t, configured.Config.Error)

	broken := m["broken"]
	assert.True(t, broken.Config.Exists)
	assert.Nil(t, broken.Config.SharedDir)
	require.NotNil(t, broken.Config.Error)
	assert.Contains(t, *broken.Config.Error, "broken.conf:1")

	noconfig := m["noconfig"]
	assert.False(t, noconfig.Config.Exists)
	assert.Equal(t, ptr(filepath.Join(w.dir, "noconfig.conf")+": no such file"), noconfig.Config.Error)
	assert.Nil(t, noconfig.Service)
}

func TestListAsksSystemdInTwoRoundTripsWhateverTheNumberOfInstances(t *testing.T) {
	for _, n := range []int{0, 1, 10, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			w := newWorld(t)
			for i := range n {
				name := fmt.Sprintf("vm%d", i)
				w.configure(t, name)
				socketState, serviceState := "listening", "dead"
				if i%10 == 0 {
					socketState, serviceState = "running", "running"
				}
				w.bus.add("virtiofsd@"+name+".socket", "active", socketState, nil)
				if i%5 == 4 {
					w.bus.add("virtiofsd@"+name+".service", "failed", "failed", map[string]any{"Result": "exit-code"})
					w.bus.units[len(w.bus.units)-2].ActiveState = "failed" // its socket too
				} else {
					w.bus.add("virtiofsd@"+name+".service", "active", serviceState, map[string]any{"MainPID": uint32(100 + i)})
				}
			}
			counter := &countingBus{Bus: w.bus}
			list, err := (&Lister{Bus: counter, ConfigDir: w.dir}).List(context.Background(), nil)
			require.NoError(t, err)
			assert.Len(t, list, n)
			want := 1
			if n > 0 {
				want = 2
			}
			assert.Equal(t, want, counter.roundTrips, "ListUnitsByPatterns, then one batch of GetAll")
			failedSockets := n / 5
			assert.Equal(t, 1+n+failedSockets, counter.messages, "one GetAll per service and per failed socket")
			seen := map[string]bool{}
			for _, r := range counter.getAlls {
				assert.False(t, seen[string(r.Path)], "%s asked twice", r.Path)
				seen[string(r.Path)] = true
			}
		})
	}
}

func TestListByNameShowsOnlyThoseAndNamesTheUnknownOnes(t *testing.T) {
	w := newWorld(t)
	w.configure(t, "vm1")
	w.configure(t, "vm2")
	w.bus.add("virtiofsd@vm3.socket", "active", "listening", nil)
	w.bus.add("virtiofsd@vm4.service", "inactive", "dead", nil)
	counter := &countingBus{Bus: w.bus}
	list, err := (&Lister{Bus: counter, ConfigDir: w.dir}).List(context.Background(), []string{"vm3", "vm1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"vm1", "vm3"}, []string{list[0].Name, list[1].Name})
	assert.Len(t, list, 2)
	assert.Zero(t, len(counter.getAlls), "no properties read for instances not asked for")

	list, err = w.list(t, "vm2", "nosuch", "vm4", "nosuch", "other")
	var unknown *UnknownError
	require.ErrorAs(t, err, &unknown)
	assert.Equal(t, []string{"nosuch", "other"}, unknown.Names)
	assert.Contains(t, err.Error(), "no instance nosuch, other")
	assert.Len(t, list, 2, "the known ones are still listed")

	_, err = w.list(t, "../etc/passwd")
	assert.ErrorContains(t, err, "does not allow")
}

func TestListSkipsAUnitUnloadedBetweenTheTwoCalls(t *testing.T) {
	w := newWorld(t)
	w.bus.add("virtiofsd@gone.service", "inactive", "dead", nil)
	delete(w.bus.props, unitPath("virtiofsd@gone.service"))
	list, err := w.list(t)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "inactive", list[0].Service.ActiveState)
}

func TestListIgnoresUnitsAndFilesThatAreNotInstances(t *testing.T) {
	w := newWorld(t)
	w.bus.add("virtiofsd@.service", "inactive", "dead", nil)
	w.bus.add("virtiofsd@x.timer", "inactive", "dead", nil)
	require.NoError(t, os.WriteFile(filepath.Join(w.dir, "notes.txt"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(w.dir, ".hidden.conf"), nil, 0o644))
	list, err := w.list(t)
	require.NoError(t, err)
	assert.Empty(t, list)

	w.dir = filepath.Join(w.dir, "missing")
	list, err = w.list(t)
	require.NoError(t, err, "a missing config folder holds no instance")
	assert.Empty(t, list)
}

func TestVirtiofsdPIDIsCheckedAgainstProcWhenItShowsTheShim(t *testing.T) {
	proc := t.TempDir()
	stat := func(pid, ppid int) {
		require.NoError(t, os.MkdirAll(filepath.Join(proc, fmt.Sprint(pid)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(proc, fmt.Sprint(pid), "stat"),
			fmt.Appendf(nil, "%d (a (b) c) S %d 1 1 0 -1\n", pid, ppid), 0o644))
	}
	stat(100, 1) // the shim
	stat(101, 100)
	stat(200, 1) // a shim whose status has no pid, one child
	stat(201, 200)
	stat(300, 1) // the virtiofsd of its status text is gone

	v := newProcView(proc)
	assert.Equal(t, ptr(101), v.virtiofsdPID(ptr(100), 101))
	assert.Equal(t, ptr(201), v.virtiofsdPID(ptr(200), 0), "no state: the shim's only child")
	assert.Nil(t, v.virtiofsdPID(ptr(300), 301), "gone already")
	assert.Equal(t, ptr(42), v.virtiofsdPID(ptr(400), 42), "shim not in this /proc: trust it")
	assert.Nil(t, v.virtiofsdPID(nil, 101), "no main process, no virtiofsd")

	none := newProcView("")
	assert.Equal(t, ptr(301), none.virtiofsdPID(ptr(300), 301))
	assert.Nil(t, none.virtiofsdPID(ptr(200), 0))
}

func TestExitMeaningComesFromTheExitStatusTable(t *testing.T) {
	for _, c := range []struct {
		code   int64
		status int
		want   string
	}{
		{1, 0, "clean end"},
		{1, 1, "virtiofsd failed with this exit status of its own"},
		{1, 64, "usage:"},
		{1, 69, "unavailable:"},
		{1, 76, "a live migration failed: virtiofsd could not load the incoming state (destination: the VM did not arrive)"},
		{1, 78, "config:"},
		{1, 137, "virtiofsd was killed by signal 9 (SIGKILL)"},
		{1, 100, "unknown exit status"},
		{2, 9, "the shim was killed by signal 9 (SIGKILL)"},
		{3, 6, "the shim was killed by signal 6 (SIGABRT)"},
	} {
		assert.Contains(t, exitMeaning(c.code, c.status), c.want, "%d/%d", c.code, c.status)
	}
}

func TestTableAndJSONShowTheSameRows(t *testing.T) {
	w := newWorld(t)
	share := w.configure(t, "vm1")
	w.bus.add("virtiofsd@vm1.socket", "active", "running", nil)
	w.bus.add("virtiofsd@vm1.service", "active", "running", map[string]any{
		"StateChangeTimestamp": uint64(since.UnixMicro()), "MainPID": uint32(812),
		"StatusText": "Serving a vhost-user client on /run/virtiofsd/vm1.sock, sharing " + share + " (virtiofsd pid 815)",
	})
	w.publish(t, state.State{Instance: "vm1", ShimPID: 812, Phase: state.Serving, VirtiofsdPID: 815})
	w.configure(t, "vm2", "SHARED_DIR=/srv/a\tb")
	w.configure(t, "vm3")
	list, err := w.list(t)
	require.NoError(t, err)

	var table bytes.Buffer
	require.NoError(t, WriteTable(&table, list))
	lines := strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n")
	require.Len(t, lines, 4)
	assert.Regexp(t, `^INSTANCE +SOCKET +SERVICE +SINCE +PID +VIRTIOFSD +CLIENT +SHARED DIR +STATUS$`, lines[0])
	col := strings.Index(lines[0], "SHARED DIR")
	for _, l := range lines[1:] {
		assert.NotEqual(t, byte(' '), l[col], "column aligned: %q", l)
		assert.Equal(t, byte(' '), l[col-1], "column aligned: %q", l)
	}
	assert.Equal(t, []string{"vm1", "active/running", "active/running", since.Local().Format(TimeLayout), "812", "815", "connected", share,
		"Serving a vhost-user client on /run/virtiofsd/vm1.sock, sharing " + share + " (virtiofsd pid 815)"}, Row(list[0]))
	require.NotNil(t, list[1].Config.Error)
	assert.Equal(t, []string{"vm2", "not loaded", "not loaded", "-", "-", "-", "-", "/srv/a\tb",
		"config: " + *list[1].Config.Error + "; configured only: systemctl enable --now virtiofsd@vm2.socket"}, Row(list[1]))
	assert.Contains(t, lines[2], " /srv/a b ", "a tab in a cell does not break the table")
	assert.NotContains(t, lines[2], "\t")

	var js bytes.Buffer
	require.NoError(t, WriteJSON(&js, list))
	var doc map[string]any
	require.NoError(t, json.Unmarshal(js.Bytes(), &doc))
	assert.Equal(t, float64(1), doc["schema_version"])
	insts := doc["instances"].([]any)
	require.Len(t, insts, 3)
	vm1 := insts[0].(map[string]any)
	svc := vm1["service"].(map[string]any)
	assert.Equal(t, "2026-11-27T14:00:00.123456Z", svc["since"])
	assert.Equal(t, float64(812), svc["main_pid"])
	assert.Equal(t, float64(815), svc["virtiofsd_pid"])
	assert.Equal(t, "connected", svc["client"])
	assert.Equal(t, "serving", svc["state"].(map[string]any)["phase"])
	assert.Nil(t, vm1["deferred_restart"])
	assert.Nil(t, svc["exit"])
	vm3 := insts[2].(map[string]any)
	assert.Nil(t, vm3["socket"])
	assert.Nil(t, vm3["service"])
	assert.Contains(t, vm3, "failure")
	assert.Nil(t, vm3["config"].(map[string]any)["error"])

	js.Reset()
	require.NoError(t, WriteJSON(&js, nil))
	assert.JSONEq(t, `{"schema_version":1,"instances":[]}`, js.String())
}

func TestListKeepsEscapedNamesAsSystemdWritesThem(t *testing.T) {
	w := newWorld(t)
	name := `srv-vm\x2d1`
	share := w.configure(t, "srv-vm-1")
	require.NoError(t, os.Rename(filepath.Join(w.dir, "srv-vm-1.conf"), filepath.Join(w.dir, name+".conf")))
	w.bus.add("virtiofsd@"+name+".socket", "active", "listening", nil)
	w.bus.add("virtiofsd@srv-other.socket", "active", "listening", nil)
	list, err := w.list(t, name)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, name, list[0].Name)
	assert.Equal(t, "virtiofsd@"+name+".socket", list[0].Socket.Unit.Unit)
	assert.Equal(t, ptr(share), list[0].Config.SharedDir)
}

func TestIdleInstanceDoesNotShowTheLastSessionsStatus(t *testing.T) {
	w := newWorld(t)
	share := w.configure(t, "vm1")
	w.bus.add("virtiofsd@vm1.socket", "active", "listening", nil)
	// systemd keeps the last STATUS= of a service that has ended.
	w.bus.add("virtiofsd@vm1.service", "inactive", "dead", map[string]any{
		"StateChangeTimestamp": uint64(since.UnixMicro()),
		"StatusText":           "Serving a vhost-user client on /run/virtiofsd/vm1.sock, sharing " + share + " (virtiofsd pid 815)",
	})
	list, err := w.list(t)
	require.NoError(t, err)
	require.Len(t, list, 1)
	row := Row(list[0])
	assert.Equal(t, "-", row[6], "no client")
	assert.NotContains(t, row[8], "Serving", "an idle instance does not read as serving")
}

// The state file of a past run (another shim pid) says nothing of the
// running one.
func TestListTrustsOnlyTheRunningShimsState(t *testing.T) {
	w := newWorld(t)
	w.configure(t, "vm1")
	w.bus.add("virtiofsd@vm1.socket", "active", "running", nil)
	w.bus.add("virtiofsd@vm1.service", "active", "running", map[string]any{"MainPID": uint32(900)})
	w.publish(t, state.State{Instance: "vm1", ShimPID: 812, Phase: state.Serving, VirtiofsdPID: 815})
	list, err := w.list(t)
	require.NoError(t, err)
	assert.Nil(t, list[0].Service.Client)
	assert.Nil(t, list[0].Service.VirtiofsdPID)
}

func TestListShowsADeferredRestart(t *testing.T) {
	w := newWorld(t)
	w.configure(t, "vm1")
	w.bus.add("virtiofsd@vm1.socket", "inactive", "dead", nil)
	w.bus.add("virtiofsd@vm1.service", "active", "running", map[string]any{"MainPID": uint32(812)})
	w.publish(t, state.State{Instance: "vm1", ShimPID: 812, Phase: state.Serving, VirtiofsdPID: 815, Release: state.KeepsServing})
	marker := state.MarkerPath(w.run, "vm1")
	require.NoError(t, state.WriteMarker(marker, state.Deferral{UnitFileState: "enabled"}))
	list, err := w.list(t)
	require.NoError(t, err)
	require.NotNil(t, list[0].DeferredRestart)
	row := Row(list[0])
	assert.Equal(t, "inactive/dead (restart deferred)", row[1])
	assert.Equal(t, "connected", row[6])
	assert.Contains(t, row[8], "a restart of the socket waits")
	assert.Empty(t, list[0].Failure)

	// The session ended, and resume could not start the socket.
	w.bus = &fakeBus{}
	w.bus.add("virtiofsd@vm1.socket", "inactive", "dead", nil)
	w.bus.add("virtiofsd@vm1.service", "inactive", "dead", nil)
	require.NoError(t, state.WriteMarker(marker, state.Deferral{UnitFileState: "enabled", ResumeError: "start virtiofsd@vm1.socket: NoReply"}))
	list, err = w.list(t)
	require.NoError(t, err)
	assert.Contains(t, list[0].Failure, "its deferred restart failed (start virtiofsd@vm1.socket: NoReply)")
	assert.Contains(t, Row(list[0])[8], "failed: socket: its deferred restart failed")
}

func TestListShowsTheFrontAndItsHandovers(t *testing.T) {
	w := newWorld(t)
	w.configure(t, "vm1")
	w.bus.add("virtiofsd@vm1.socket", "active", "running", nil)
	w.bus.add("virtiofsd@vm1.service", "active", "running", map[string]any{"MainPID": uint32(812)})
	w.publish(t, state.State{Instance: "vm1", ShimPID: 812, Phase: state.Serving, VirtiofsdPID: 815, Front: true, Handovers: 3})
	list, err := w.list(t)
	require.NoError(t, err)
	assert.Equal(t, "connected (front, 3 handovers)", Row(list[0])[6])
	b, err := json.Marshal(list[0])
	require.NoError(t, err)
	assert.Contains(t, string(b), `"front":true,"handovers":3`, "list --json has them in service.state")
}

func TestListShowsADegradedSessionAsAFailure(t *testing.T) {
	w := newWorld(t)
	w.configure(t, "vm1")
	w.bus.add("virtiofsd@vm1.socket", "active", "running", nil)
	w.bus.add("virtiofsd@vm1.service", "active", "running", map[string]any{"MainPID": uint32(812)})
	w.publish(t, state.State{Instance: "vm1", ShimPID: 812, Phase: state.Serving, VirtiofsdPID: 816, Front: true,
		Degraded: &state.Degraded{Recoveries: 1, LastEnd: "signal 9 (SIGKILL)"}})
	list, err := w.list(t)
	require.NoError(t, err)
	assert.Equal(t, "service: degraded, virtiofsd crashed (last: signal 9 (SIGKILL); 1 recoveries): the guest must umount and mount the share again, with nothing held open on it",
		list[0].Failure, "monitoring reads a non-empty failure")
	row := Row(list[0])
	assert.Equal(t, "connected (front, 0 handovers) degraded", row[6])
	assert.Contains(t, row[8], "failed: service: degraded")
	var b strings.Builder
	require.NoError(t, WriteJSON(&b, list))
	assert.Contains(t, b.String(), `"degraded": {`)
	assert.Contains(t, b.String(), `"last_end": "signal 9 (SIGKILL)"`)
}
