package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/migration"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

func init() { register(75, "migration", reportMigration) }

// migrationRounds is how many migrations each variant gets (each is a guest
// boot, a migration and a power-off under TCG: about half a minute).
const migrationRounds = 11

// migrationVariant is one way both hosts serve the guest's share.
type migrationVariant struct {
	name   string
	socket string // inside both hosts
	unit   string // the service that serves one session, on each host
	total  Sample
	down   Sample
}

// reportMigration measures QEMU live migrations of a guest that holds a
// file open on its share and keeps writing, between two Debian 13 hosts
// (shimbox.Pair): the shim's units on both hosts against a bare Rust
// virtiofsd unit on both, interleaved, in one run.
func reportMigration(t *testing.T, s *section) {
	s.title = "Live migration (Debian 13 leg)"
	ctx := context.Background()
	share := filepath.Join(benchDir(t), "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	p := shimbox.NewPair(t, shimbox.Options{Name: "bench-mig", Platform: shimbox.Debian13, ExtraUnits: bareRustUnits(t, share)})
	if err := p.Configure(migration.Instance, "SHARED_DIR="+share+"\n"); err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Boxes() {
		if out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@vm1.socket", "bare@vm1.socket"); err != nil {
			t.Fatal(err, out)
		}
	}
	img, err := guest.Prepare(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	loadBefore := loadavg()
	vs := []*migrationVariant{
		{name: "bare Rust virtiofsd unit on both hosts (bare@.socket + bare@.service)", socket: "/run/bare/vm1.sock", unit: "bare@vm1.service"},
		{name: "shim on both hosts (virtiofsd@.socket + virtiofsd@.service), config SHARED_DIR only", socket: "/run/virtiofsd/vm1.sock", unit: "virtiofsd@vm1.service"},
	}
	for r := range migrationRounds {
		for i := range vs {
			v := vs[(i+r)%len(vs)] // rotate the order
			info, err := migrateOnce(ctx, p, img, share, v)
			if err != nil {
				t.Fatalf("round %d, %s: %v", r, v.unit, err)
			}
			v.total = append(v.total, time.Duration(info.TotalTime)*time.Millisecond)
			v.down = append(v.down, time.Duration(info.Downtime)*time.Millisecond)
		}
	}

	version := func(argv ...string) string {
		out, _ := p.Src.Run(ctx, argv[0], argv[1:]...)
		return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	}
	s.printf("Two private systemds booted from the Debian 13 tree (%s, %s, the shim installed from its .deb)\n"+
		"as the source and destination hosts, sharing one folder; QEMU 10 (TCG, 512 MiB, one vhost-user-fs\n"+
		"device) on this host connected to each host's socket. Per migration: boot the guest on the source, its\n"+
		"script holds a file open and appends a line every 0.2 s; start the destination QEMU (`-incoming defer`,\n"+
		"which starts the destination's session), QMP `migrate-incoming` and `migrate` to a unix socket, then\n"+
		"query-migrate until `completed`; quit the source QEMU and let the guest power off on the destination.\n"+
		"Figures are QMP query-migrate's `total-time` and `downtime` (milliseconds, QEMU's own clock), %d\n"+
		"migrations per variant, interleaved, order rotated. The bare unit pair runs `%s`\n"+
		"directly (find-paths, the default migration mode, on both).\n\n",
		version("systemctl", "--version"), version("/usr/libexec/virtiofsd", "--version"), migrationRounds,
		"/usr/libexec/virtiofsd --fd=3 --shared-dir=DIR --cache=auto")
	bare := vs[0]
	s.printf("| variant | migrations | total-time median | min | max | downtime median | min | max | total / bare | downtime / bare | goal within 1.1x of bare |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range vs {
		rt := float64(v.total.Median()) / float64(bare.total.Median())
		rd := float64(v.down.Median()) / float64(bare.down.Median())
		g := "(the baseline)"
		if v != bare {
			g = goal(rt <= 1.1 && rd <= 1.1)
		}
		s.printf("| %s | %d | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n", v.name, len(v.total),
			msInt(v.total.Median()), msInt(v.total.Min()), msInt(v.total.Max()),
			msInt(v.down.Median()), msInt(v.down.Min()), msInt(v.down.Max()), rt, rd, g)
		t.Logf("migration, %s: total %v, downtime %v", v.unit, v.total, v.down)
	}
	// Paired: each round migrates once per variant, back to back, so the
	// load is about the same for both; the median of the rounds' ratios
	// is less moved by the load's drift over the run.
	shim := vs[1]
	s.printf("\nPaired by round (the two migrations of a round run back to back): median of the rounds' shim / bare\n"+
		"ratios, total-time %.2f, downtime %.2f.\n", medianRatio(shim.total, bare.total), medianRatio(shim.down, bare.down))
	s.printf("\nLoad average (1, 5, 15 min) before this section: %s; after: %s. On a loaded machine the spread\n"+
		"(min to max) of one variant is wider than the gap between the variants' medians: read the ratio with it.\n", loadBefore, loadavg())
	s.printf("\nThe shim is not on the migration's path: QEMU talks vhost-user to virtiofsd on the socket systemd\n" +
		"passed, on both hosts, and the state goes through QEMU's stream. What the shim adds is the sandboxed\n" +
		"unit's start on the destination, which happens when its QEMU starts, before the migration begins.\n")
	s.measuredBy("migration", "migration_test.go")
}

// medianRatio is the median of a[i]/b[i].
func medianRatio(a, b Sample) float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			r = append(r, float64(a[i])/float64(b[i]))
		}
	}
	if len(r) == 0 {
		return 0
	}
	sort.Float64s(r)
	if len(r)%2 == 1 {
		return r[len(r)/2]
	}
	return (r[len(r)/2-1] + r[len(r)/2]) / 2
}

// msInt formats a duration in whole milliseconds, QMP's unit.
func msInt(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// migrateOnce runs one migration of a fresh guest through variant v's
// socket on both hosts, and waits for both hosts' sessions to end.
func migrateOnce(ctx context.Context, p *shimbox.Pair, img *guest.Image, share string, v *migrationVariant) (migration.Info, error) {
	for _, f := range []string{migration.UpFile, migration.MigratedFile, migration.HeldFile, migration.NewFile} {
		if err := os.Remove(filepath.Join(share, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return migration.Info{}, err
		}
	}
	vm, err := migration.BootOn(ctx, p, img, migration.Script(false), v.socket)
	if err != nil {
		return migration.Info{}, err
	}
	defer vm.Close()
	if err := waitFile(filepath.Join(share, migration.UpFile), 3*time.Minute); err != nil {
		return migration.Info{}, fmt.Errorf("%w; console:\n%s", err, vm.Src.Serial())
	}
	info, err := vm.Migrate(ctx, migration.Options{})
	if err == nil && info.Status != "completed" {
		err = fmt.Errorf("migration %s: %+v", info.Status, info)
	}
	if err != nil {
		return info, err
	}
	if err := vm.QuitSource(ctx); err != nil {
		return info, err
	}
	if err := vm.Signal(share, migration.MigratedFile); err != nil {
		return info, err
	}
	res, err := vm.Wait(true)
	if err == nil && res.Values["done"] != "yes" {
		err = fmt.Errorf("the guest did not finish its script:\n%s", res.Serial)
	}
	if err != nil {
		return info, err
	}
	for _, b := range p.Boxes() {
		if err := waitInactive(ctx, b, v.unit, time.Minute); err != nil {
			return info, err
		}
	}
	return info, nil
}

// waitFile polls until path exists.
func waitFile(path string, d time.Duration) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s did not appear within %v", path, d)
}
