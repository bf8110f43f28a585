package handovertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// How many handovers one guest boot carries.
const (
	reloads  = 50 // of the find-paths share
	restarts = 5  // of each Rust share
	// handlesEvery: the file-handles share is reloaded with every
	// handlesEvery-th reload of the other.
	handlesEvery = 5
)

// The instances, each the guest's share of the same tag.
const (
	paths   = "soak"    // the default migration mode (find-paths)
	handles = "handles" // MIGRATION_MODE=file-handles: the guest also holds a deleted file
	cShare  = "cflavor" // the C virtiofsd (Debian 12 only): its reload is refused
)

// TestGuestSeesNothingWhileItsSharesAreReloadedAndRestarted: under a guest
// that checks its own data on two shares, 50 reloads of one (60 in all)
// and 5 restarts of each, each onto a new virtiofsd (a new shim for a
// restart); halfway, reloads that must fail (a virtiofsd that cannot
// start, one that cannot load the state, a changed SHARED_DIR, the C
// virtiofsd) fail saying why and keep the session. At the end, on Debian
// 13, Debian's virtiofsd package repacked as a newer version is installed
// under the guest. The guest sees no error, and its data reads back, but
// for the file-handles share's open, deleted file after a restart, which
// a restart cannot carry (docs/live-restart.md): that file alone fails.
func TestGuestSeesNothingWhileItsSharesAreReloadedAndRestarted(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		begin := time.Now()
		r := boot(t, leg)
		defer func() { t.Logf("%s: %s in all, boot included", leg, time.Since(begin).Round(time.Second)) }()
		start := time.Now()
		for i := 1; i <= reloads; i++ {
			r.reload(t, paths)
			if i%handlesEvery == 0 {
				r.reload(t, handles)
			}
			if i == reloads/2 {
				t.Run("a virtiofsd that cannot start is refused", r.brokenVirtiofsd)
				t.Run("a changed SHARED_DIR is refused", r.changedSharedDir)
				t.Run("a virtiofsd that cannot load the state is refused", r.refusedLoad)
				if r.c {
					t.Run("the C virtiofsd is refused", r.cVirtiofsd)
				} else { // the C virtiofsd cannot migrate, so its share blocks the VM's migration
					t.Run("a reload during a live migration is refused", r.duringMigration)
				}
			}
		}
		for _, inst := range []string{paths, handles} {
			assert.Equal(t, r.reloads[inst], r.handovers(t, inst), "%s: the state counts every reload", inst)
		}
		t.Logf("%d reloads in %s", reloads+reloads/handlesEvery, time.Since(start).Round(time.Second))
		assert.Empty(t, guestErrors(r.m.Serial()), "the guest saw no error before the restarts")
		for i := 1; i <= restarts; i++ {
			r.restart(t, paths)
			r.restart(t, handles)
		}
		for _, inst := range []string{paths, handles} {
			n := r.handovers(t, inst)
			assert.Equal(t, r.reloads[inst]+restarts, n, "%s: the count goes on across restarts, each one more", inst)
			t.Logf("%s: %d reloads (%d tried again), %d restarts (%d carried a lost inode), the state counts %d handovers",
				inst, r.reloads[inst], r.retried[inst], restarts, r.lost[inst], n)
		}
		if leg.Rust() { // where virtiofsd is a package
			t.Run("an upgrade of virtiofsd's package moves the sessions onto it", r.upgrade)
		}
		for _, inst := range []string{paths, handles} {
			// The Rust virtiofsd warns when a SAVE comes with no F_LOG_ALL
			// before it (fronttest holds that fact): every reload and
			// restart announced its save, so it prepared outside the pause.
			assert.False(t, mentions(r.said(t, inst, 0), []string{"did not announce migration"}),
				"%s: virtiofsd was told of each save before it\n%s", inst, r.tail(inst))
		}
		r.finish(t)
	})
}

// rig is a box of one leg whose instances serve a running guest.
type rig struct {
	b   *shimbox.Box
	leg shimbox.Platform
	m   *guest.Machine
	// bin is the Rust instances' virtiofsd: on Debian 13 the installed
	// one (the box's root is its own), on Debian 12 their VIRTIOFSD=, a
	// symbolic link to the Debian 13 tree's. replace puts another program
	// there; while it is, rustBin is the Rust virtiofsd.
	bin, rustBin string
	c            bool              // the C instance runs too (Debian 12)
	shares       map[string]string // instance -> its shared folder, on the host
	conf         map[string]string // instance -> its config
	seen         map[int]bool      // pids of every virtiofsd and shim seen
	reloads      map[string]int    // reloads done, by instance
	retried      map[string]int    // reloads that took more than one try, by instance
	lost         map[string]int    // restarts that carried a lost inode failed in the guest, by instance
}

func unit(inst string) string { return "virtiofsd@" + inst + ".service" }

// boot configures the instances, boots the guest with guestload's check
// on each share, and waits until it holds its files open. Everything
// ends with the test.
func boot(t *testing.T, leg shimbox.Platform) *rig {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := shimbox.New(t, shimbox.Options{Name: "handover", Platform: leg}) // skips, saying why, when not root
	r := &rig{b: b, leg: leg, c: !leg.Rust(), shares: map[string]string{}, conf: map[string]string{},
		seen: map[int]bool{}, reloads: map[string]int{}, retried: map[string]int{}, lost: map[string]int{}}
	var rust []string // the Rust instances' config lines
	if leg.Rust() {
		r.bin, r.rustBin = leg.Virtiofsd(), leg.Virtiofsd()+".real"
	} else {
		tree, err := distro.Debian13(ctx)
		require.NoError(t, err, "the Debian 13 tree, for its Rust virtiofsd")
		r.rustBin, err = tree.RustVirtiofsd()
		require.NoError(t, err)
		r.bin = filepath.Join(b.Root, "virtiofsd")
		require.NoError(t, os.Symlink(r.rustBin, r.bin))
		// No FLAVOR=: the shim asks the binary what it can do (FLAVOR=rust
		// skips that, and the front with it).
		rust = []string{"VIRTIOFSD=" + r.bin}
	}
	instances := map[string][]string{paths: rust, handles: append(rust[:len(rust):len(rust)], "MIGRATION_MODE=file-handles")}
	if r.c {
		instances[cShare] = []string{"VIRTIOFSD=" + virtiofsd.CVirtiofsd}
	}
	for inst, extra := range instances {
		dir, err := b.AddInstance(inst, extra...)
		require.NoError(t, err)
		r.shares[inst] = dir
		r.conf[inst] = "SHARED_DIR=" + dir + "\n" + strings.Join(extra, "\n") + "\n"
	}
	r.systemctl(t, "daemon-reload") // the generator's drop-in for file-handles
	for inst := range instances {
		r.systemctl(t, "enable", "--now", "virtiofsd@"+inst+".socket")
	}

	bin := filepath.Join(t.TempDir(), "guestload")
	require.NoError(t, guestload.Build(ctx, bin))
	program, err := os.ReadFile(bin)
	require.NoError(t, err)
	// QEMU 10 on both legs, the same guest side for both: the Debian
	// 12 leg runs the Debian 13 tree's QEMU on this host, as it runs its
	// virtiofsd (Debian 12's own QEMU 7.2 is e2etest's and fronttest's).
	qemu, err := shimbox.Debian13.QEMU(ctx)
	require.NoError(t, err)
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err, "prepare the guest image")
	var shares []guest.Share
	script := ""
	for _, inst := range []string{paths, handles, cShare} {
		if _, ok := instances[inst]; !ok {
			continue
		}
		shares = append(shares, guest.Share{Tag: inst, Socket: b.Socket(inst)})
		script += fmt.Sprintf("mount -t virtiofs %[1]s /mnt/%[1]s || exit 1\n", inst)
	}
	for _, s := range shares {
		extra := ""
		switch s.Tag {
		case handles:
			extra = " -deleted" // find-paths cannot carry it (DESIGN.md)
		}
		// Both remove files: find-paths cannot save a removed file the
		// guest still knows ("Migration source has lost inode"), so such a
		// reload is tried again once the guest has forgotten it.
		script += fmt.Sprintf("guestload check -dir /mnt/%[1]s -label %[1]s -limit 8m -pause 20ms%[2]s &\n", s.Tag, extra)
	}
	script += "wait\necho \"RESULT done=yes\"\n"
	r.m, err = guest.Start(context.Background(), img, guest.Spec{
		QEMU: qemu, Shares: shares, Script: script, Timeout: 10 * time.Minute, WorkDir: b.Root,
		QMP:   filepath.Join(b.Root, "qmp.sock"),
		Files: map[string][]byte{"bin/guestload": program},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		r.m.Kill()
		_, _ = r.m.Wait()
	})
	for inst, dir := range r.shares {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, err := os.Stat(filepath.Join(dir, guestload.CheckUp))
			assert.NoError(c, err)
		}, 3*time.Minute, 200*time.Millisecond, "the guest works on %s; console:\n%s\nQEMU:\n%s\n%s", inst, r.m.Serial(), r.m.Stderr(), r.tail(inst))
		st := r.state(t, inst)
		r.seen[st.VirtiofsdPID], r.seen[st.ShimPID] = true, true
	}
	return r
}

// reload reloads an instance: a new virtiofsd, the same shim, and the
// guest goes on.
func (r *rig) reload(t *testing.T, inst string) {
	t.Helper()
	before := r.state(t, inst)
	r.systemctl(t, "reload", unit(inst))
	r.reloads[inst]++
	after := r.changed(t, inst, before, "reload")
	assert.Equal(t, before.ShimPID, after.ShimPID, "%s: a reload keeps the shim", inst)
	if a := after.Reload; a != nil && a.Tries > 1 {
		r.retried[inst]++
	}
	r.progress(t, inst)
}

// restart restarts an instance: a new shim and a new virtiofsd, and the
// guest goes on.
func (r *rig) restart(t *testing.T, inst string) {
	t.Helper()
	before := r.state(t, inst)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, err := r.b.Journal(ctx, "-u", unit(inst))
	require.NoError(t, err)
	r.systemctl(t, "restart", unit(inst))
	after := r.changed(t, inst, before, "restart")
	if mentions(r.said(t, inst, len(old)), []string{"lost inode"}) {
		r.lost[inst]++
	}
	assert.False(t, r.seen[after.ShimPID], "%s: a restart starts a new shim (pid %d)", inst, after.ShimPID)
	r.seen[after.ShimPID] = true
	r.progress(t, inst)
}

// changed waits until the instance's live state shows another virtiofsd
// than before, serving, and checks that it is a new one.
func (r *rig) changed(t *testing.T, inst string, before *state.State, what string) *state.State {
	t.Helper()
	var after *state.State
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, err := r.b.LiveState(context.Background(), inst)
		if assert.NoError(c, err) && assert.NotNil(c, st) {
			assert.Equal(c, state.Serving, st.Phase)
			assert.NotEqual(c, before.VirtiofsdPID, st.VirtiofsdPID)
			after = st
		}
	}, 30*time.Second, 100*time.Millisecond, "%s serves on a new virtiofsd after the %s\n%s", inst, what, r.tail(inst))
	assert.False(t, r.seen[after.VirtiofsdPID], "%s: the %s starts a new virtiofsd (pid %d)", inst, what, after.VirtiofsdPID)
	r.seen[after.VirtiofsdPID] = true
	return after
}

// brokenVirtiofsd: with a binary that cannot start where the instance's
// virtiofsd was, a reload fails saying so, and the session stays.
func (r *rig) brokenVirtiofsd(t *testing.T) {
	broken := filepath.Join(r.b.Root, "virtiofsd.broken")
	require.NoError(t, os.WriteFile(broken, []byte("#!/bin/sh\necho 'this virtiofsd is broken on purpose' >&2\nexit 1\n"), 0o755))
	r.replace(t, broken)
	defer r.restore(t)
	r.refused(t, paths, []string{r.bin, "broken on purpose"})
}

// refusedLoad: a virtiofsd whose folder lacks the guest's files (a
// wrapper that gives the real one an empty folder) cannot load the state,
// which find-paths looks up by path: the reload fails saying so, and the
// old virtiofsd gets its rings back.
func (r *rig) refusedLoad(t *testing.T) {
	empty, err := r.b.Share("empty")
	require.NoError(t, err)
	wrapper := filepath.Join(r.b.Root, "virtiofsd.emptydir")
	script := fmt.Sprintf(`#!/bin/sh
# the real virtiofsd, on an empty folder
for a do
	shift
	case "$a" in --shared-dir=*) a=--shared-dir=%s ;; esac
	set -- "$@" "$a"
done
exec %s "$@"
`, empty, r.rustBin)
	require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o755))
	r.replace(t, wrapper)
	defer r.restore(t)
	r.refused(t, paths, []string{"Failed to load state"})
}

// upgrade installs Debian's virtiofsd package, repacked as a newer
// version, while the guest works: the package's trigger reloads each Rust
// instance onto the new binary (the same shim, a new virtiofsd, one more
// handover), and the guest goes on.
func (r *rig) upgrade(t *testing.T) {
	before, counts := map[string]*state.State{}, map[string]int{}
	for _, inst := range []string{paths, handles} {
		before[inst], counts[inst] = r.state(t, inst), r.handovers(t, inst)
	}
	r.run(t, "sh", "-c", `set -e
dpkg-deb -R /var/cache/apt/archives/virtiofsd_*.deb "$1"
sed -i 's/^Version: .*/&+handover1/' "$1/DEBIAN/control"
dpkg-deb -b "$1" "$1.deb"
dpkg -i "$1.deb"`, "-", filepath.Join(r.b.Root, "repack"))
	assert.Contains(t, r.run(t, "dpkg-query", "-W", "-f=${Version}", "virtiofsd"), "+handover1")
	for _, inst := range []string{paths, handles} {
		after := r.changed(t, inst, before[inst], "upgrade")
		assert.Equal(t, before[inst].ShimPID, after.ShimPID, "%s: an upgrade of virtiofsd reloads, keeping the shim", inst)
		assert.Equal(t, counts[inst]+1, r.handovers(t, inst), "%s: the upgrade is one more handover", inst)
		exe := r.run(t, "readlink", fmt.Sprintf("/proc/%d/exe", after.VirtiofsdPID))
		assert.Equal(t, r.bin, strings.TrimSpace(exe), "%s: the new virtiofsd is the installed file, not the one dpkg replaced", inst)
		r.progress(t, inst)
	}
}

// replace puts the program at path (a host path the box sees at the same
// path) where the Rust instances' virtiofsd is, at once; restore puts the
// Rust virtiofsd back.
func (r *rig) replace(t *testing.T, path string) {
	t.Helper()
	if r.leg.Rust() { // the installed one, in the box's own root
		r.run(t, "sh", "-c", `mv "$1" "$2" && cp "$3" "$1.new" && mv "$1.new" "$1"`, "-", r.bin, r.rustBin, path)
		return
	}
	r.link(t, path)
}

func (r *rig) restore(t *testing.T) {
	t.Helper()
	if r.leg.Rust() {
		r.run(t, "mv", r.rustBin, r.bin)
		return
	}
	r.link(t, r.rustBin)
}

// link points the Debian 12 leg's VIRTIOFSD= link at target, at once.
func (r *rig) link(t *testing.T, target string) {
	t.Helper()
	tmp := r.bin + ".new"
	_ = os.Remove(tmp)
	require.NoError(t, os.Symlink(target, tmp))
	require.NoError(t, os.Rename(tmp, r.bin))
}

// run runs a command in the box; it fails the test on error.
func (r *rig) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := r.b.Run(ctx, name, args...)
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	return out
}

// changedSharedDir: a reload that would change SHARED_DIR is refused with
// the config's file and line, and the session stays on its folder.
func (r *rig) changedSharedDir(t *testing.T) {
	elsewhere, err := r.b.Share("elsewhere")
	require.NoError(t, err)
	require.NoError(t, r.b.Configure(paths, strings.Replace(r.conf[paths], r.shares[paths], elsewhere, 1)))
	defer func() { require.NoError(t, r.b.Configure(paths, r.conf[paths])) }()
	r.refused(t, paths, []string{"SHARED_DIR"}, []string{paths + ".conf:1"})
	st := r.state(t, paths)
	assert.Equal(t, r.shares[paths], st.SharedDir, "the session serves its folder still")
}

// duringMigration reloads while a live migration runs (QEMU logs the
// guest's dirty memory through virtiofsd, which a new virtiofsd would not
// know): the reload is refused saying so, the migration, the session and
// the guest go on. The migration goes to a program that discards it, at a
// bandwidth at which it never ends by itself.
func (r *rig) duringMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	q := r.m.QMP()
	// migration is query-migrate's status ("" when QMP fails).
	migration := func() string {
		var info struct {
			Status string `json:"status"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &info); err != nil {
			return ""
		}
		return info.Status
	}
	require.NoError(t, q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": 1 << 20}, nil))
	require.NoError(t, q.Execute(ctx, "migrate", map[string]any{"uri": "exec:cat >/dev/null"}, nil))
	defer func() {
		_ = q.Execute(ctx, "migrate_cancel", nil, nil)
		require.Eventually(t, func() bool { return migration() == "cancelled" }, time.Minute, 100*time.Millisecond)
	}()
	require.Eventually(t, func() bool { return migration() == "active" }, time.Minute, 100*time.Millisecond, "the migration runs")
	r.refused(t, paths, []string{"a live migration is under way"})
	assert.Equal(t, "active", migration(), "the migration goes on")
}

// cVirtiofsd: the C virtiofsd cannot save its state; its reload says a
// live swap needs the Rust virtiofsd, and its session stays.
func (r *rig) cVirtiofsd(t *testing.T) {
	r.refused(t, cShare, []string{"Rust"})
}

// refused runs a reload that must fail: systemctl reload fails, the
// journal of the unit then has a line for each group of causes (any one
// of a group's words), and the session goes on untouched: the same shim
// and virtiofsd, the same count of handovers, and the guest still works.
func (r *rig) refused(t *testing.T, inst string, causes ...[]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := r.state(t, inst)
	count := r.handovers(t, inst)
	old, err := r.b.Journal(ctx, "-u", unit(inst))
	require.NoError(t, err)
	out, err := r.b.Systemctl(ctx, "reload", unit(inst))
	require.Error(t, err, "systemctl reload %s fails: %s", inst, out)

	said := r.said(t, inst, len(old))
	for _, words := range causes {
		assert.True(t, mentions(said, words), "%s: the journal says why the reload failed (one of %q):\n%s", inst, words, strings.Join(said, "\n"))
	}
	after := r.state(t, inst)
	assert.Equal(t, before.ShimPID, after.ShimPID, "%s: the shim goes on", inst)
	assert.Equal(t, before.VirtiofsdPID, after.VirtiofsdPID, "%s: the old virtiofsd keeps the session", inst)
	assert.Equal(t, count, r.handovers(t, inst), "%s: a refused reload is no handover", inst)
	r.progress(t, inst)
}

// said is what the shim and virtiofsd wrote to the unit's journal after
// its first n entries (systemd's own lines name the unit and its config,
// and are left out).
func (r *rig) said(t *testing.T, inst string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	entries, err := r.b.Journal(ctx, "-u", unit(inst))
	require.NoError(t, err)
	var said []string
	for _, e := range entries[n:] {
		if e["_PID"] != "1" {
			said = append(said, e["MESSAGE"])
		}
	}
	return said
}

func mentions(lines, words []string) bool {
	for _, l := range lines {
		for _, w := range words {
			if strings.Contains(l, w) {
				return true
			}
		}
	}
	return false
}

// state is the instance's live state; it must be serving.
func (r *rig) state(t *testing.T, inst string) *state.State {
	t.Helper()
	st, err := r.b.LiveState(context.Background(), inst)
	require.NoError(t, err)
	require.NotNil(t, st, "%s has a running shim with its state\n%s", inst, r.tail(inst))
	require.Equal(t, state.Serving, st.Phase, "%s serves the guest\n%s", inst, r.tail(inst))
	return st
}

// handovers is the count of handovers in the instance's session.
func (r *rig) handovers(t *testing.T, inst string) int {
	t.Helper()
	return r.state(t, inst).Handovers
}

// progress waits until the guest has finished a round on the instance's
// share that began after this call: it was not left hanging.
func (r *rig) progress(t *testing.T, inst string) {
	t.Helper()
	lines := func() int {
		b, _ := os.ReadFile(filepath.Join(r.shares[inst], guestload.CheckAppend))
		return bytes.Count(b, []byte("\n"))
	}
	n := lines()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.GreaterOrEqual(c, lines(), n+2)
	}, 2*time.Minute, 50*time.Millisecond, "the guest goes on working on %s; console:\n%s\n%s", inst, r.m.Serial(), r.tail(inst))
}

// finish stops the guest's checks and judges what it and the host saw.
func (r *rig) finish(t *testing.T) {
	t.Helper()
	for _, dir := range r.shares {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644))
	}
	res, err := r.m.Wait()
	require.NoError(t, err, "the guest finishes")
	assert.Equal(t, "yes", res.Values["done"], res.Serial)
	summaries := map[string]guestload.CheckRecord{}
	for _, rec := range guestload.ParseCheck(res.Serial) {
		if rec.Event == "summary" {
			summaries[rec.Label] = rec
		}
	}
	// A restart cannot carry an open, deleted file (the old virtiofsd is
	// gone before the new one loads it): from the first restart on, that
	// file alone fails in the guest, on the file-handles share.
	deleted := map[string]int{}
	for _, e := range guestErrors(res.Serial) {
		if e.Label == handles && e.Op == "deleted" {
			deleted[e.Label]++
			continue
		}
		t.Errorf("the guest saw an error on %s in round %d, %s: %s", e.Label, e.Round, e.Op, e.Error)
	}
	for inst, dir := range r.shares {
		s, ok := summaries[inst]
		if !assert.True(t, ok, "the guest reports on %s:\n%s", inst, res.Serial) {
			continue
		}
		if inst == handles {
			assert.Positive(t, deleted[inst], "%s: the open, deleted file fails after a restart", inst)
		}
		assert.Equal(t, deleted[inst], s.Errors, "%s: the guest saw no other error", inst)
		assert.True(t, s.Stopped, "%s: the guest ran until told to stop", inst)
		t.Logf("%s: %d rounds, %d operations, %d errors; the slowest operation (%s) took %s",
			inst, s.Rounds, s.Ops, s.Errors, s.MaxOp, s.MaxLatency().Round(time.Millisecond))
		appended, err := os.ReadFile(filepath.Join(dir, guestload.CheckAppend))
		require.NoError(t, err)
		assert.Equal(t, s.Rounds, bytes.Count(appended, []byte("\n")), "%s: every append landed, as the host sees it", inst)
		assert.EqualValues(t, s.AppendSize, len(appended), inst)
		held, err := os.ReadFile(filepath.Join(dir, guestload.CheckHeld))
		require.NoError(t, err)
		assert.Equal(t, guestload.HeldContent(guestload.CheckHeld), held, "%s: the held file is intact", inst)
	}
	assert.NotContains(t, r.m.Stderr(), "vhost", "QEMU saw no vhost-user error (no disconnect)")
}

// guestErrors is the failed operations the guest reported on its console.
func guestErrors(serial string) []guestload.CheckRecord {
	var errs []guestload.CheckRecord
	for _, rec := range guestload.ParseCheck(serial) {
		if rec.Event == "error" {
			errs = append(errs, rec)
		}
	}
	return errs
}

// systemctl runs systemctl in the box; it fails the test on error.
func (r *rig) systemctl(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := r.b.Systemctl(ctx, args...)
	inst := ""
	if last := args[len(args)-1]; strings.HasSuffix(last, ".service") {
		inst = strings.TrimSuffix(strings.TrimPrefix(last, "virtiofsd@"), ".service")
	}
	require.NoError(t, err, "systemctl %s: %s\n%s", strings.Join(args, " "), out, r.tail(inst))
}

// tail is the last lines of the instance's journal, for failure messages.
func (r *rig) tail(inst string) string {
	if inst == "" {
		return ""
	}
	out, _ := r.b.Run(context.Background(), "journalctl", "--no-pager", "-n", "80", "-u", unit(inst))
	return out
}
