package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// fakeRun is a boot's figures as the hook and the console give them: one
// group of test/guestload and the shell workload, both read under their key.
func fakeRun(create, shell time.Duration) dpRun {
	r := dpRun{guest: map[string]time.Duration{}, cpu: map[string]time.Duration{}, tree: map[string]time.Duration{},
		ticks: map[string]time.Duration{}, n: map[string]int{}, unit: map[string]string{}}
	for _, k := range []string{"auto/create", "auto/" + guestload.ShellGroup} {
		d := create
		if k != "auto/create" {
			d = shell
		}
		r.guest[k], r.cpu[k], r.tree[k], r.ticks[k], r.n[k], r.unit[k] = d, d, d, d, 1, "file"
	}
	r.takeShell("auto/"+guestload.ShellGroup, guestload.Record{NS: int64(shell), Steps: map[string]int64{"echo": int64(shell)}})
	return r
}

func TestTheShellWorkloadStaysOutOfTheGroupsSums(t *testing.T) {
	r := fakeRun(time.Second, 5*time.Second)
	assert.Equal(t, time.Second, sumGroups(r, mTree, false), "the metadata groups' sum is test/guestload's alone")
	assert.Equal(t, shellRun{guest: 5 * time.Second, cpu: 5 * time.Second, tree: 5 * time.Second,
		steps: map[string]time.Duration{"echo": 5 * time.Second}}, r.shell)
}

func TestTheShellTablesPrintEachRunAndItsRatioToTheBareUnitsRound(t *testing.T) {
	variants := []dpVariant{{name: "bare unit", key: "bare", bare: true}, {name: "shipped unit", key: "ship"}}
	runs := map[string][]dpRun{
		"bare": {fakeRun(time.Second, 2*time.Second), fakeRun(time.Second, 4*time.Second)},
		"ship": {fakeRun(time.Second, 3*time.Second), fakeRun(time.Second, 4*time.Second)},
	}
	s := &section{}
	shellTables(s, shimbox.Debian12, variants, runs)
	out := s.body.String()
	assert.Contains(t, out, "| 0 | shipped unit | 3000 ms (1.50) |")
	assert.Contains(t, out, "| 1 | shipped unit | 4000 ms (1.00) |")
	assert.Equal(t, 2, strings.Count(out, "| 0 | "), "round 0: one row per variant")
	// Medians (lower of two): bare 2 s, ship 3 s; paired 1.00 and 1.50.
	assert.Contains(t, out, "guest time <= 1.03x: 1.50 (**missed**; paired median 1.25)")
}
