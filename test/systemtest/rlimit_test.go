package systemtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// rlimitWarning is how the Rust virtiofsd's RLIMIT_NOFILE warning begins.
const rlimitWarning = "Failure when trying to set the limit to "

// nofile reads a process's RLIMIT_NOFILE (soft, hard) inside the box.
func nofile(t *testing.T, b *shimbox.Box, pid string) (soft, hard uint64) {
	t.Helper()
	for _, l := range strings.Split(run(t, b, "cat", "/proc/"+pid+"/limits"), "\n") {
		if f := strings.Fields(l); len(f) >= 5 && strings.HasPrefix(l, "Max open files") {
			soft, _ = strconv.ParseUint(f[3], 10, 64)
			hard, _ = strconv.ParseUint(f[4], 10, 64)
			return soft, hard
		}
	}
	t.Fatalf("no Max open files in /proc/%s/limits", pid)
	return 0, 0
}

// canRaiseLimits tells whether a process in the box has CAP_SYS_RESOURCE.
func canRaiseLimits(t *testing.T, b *shimbox.Box, pid string) bool {
	t.Helper()
	for _, l := range strings.Split(run(t, b, "cat", "/proc/"+pid+"/status"), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			require.NoError(t, err)
			return caps&(1<<24) != 0 // CAP_SYS_RESOURCE
		}
	}
	t.Fatalf("no CapEff in /proc/%s/status", pid)
	return false
}

// The unit's LimitNOFILE=1000000 gives the Rust virtiofsd the descriptors
// it asks for, so it has nothing to warn about, wherever systemd can set
// that limit. Where systemd cannot (a manager without CAP_SYS_RESOURCE,
// as on these container machines), systemd clamps it to its own hard
// limit, the unit still starts, and the Rust virtiofsd warns, once per
// session, that it uses that hard limit: docs/virtiofsd.md explains it.
//
// The Rust virtiofsd is Debian 13's, on its own leg (the C one of Debian
// 12 asks for no more descriptors than it has).
func TestRustVirtiofsdGetsTheDescriptorsItAsksFor(t *testing.T) {
	b := box(t, shimbox.Debian13)
	_, err := b.AddInstance("r")
	require.NoError(t, err)
	enable(t, b, "r")
	servedAndActive(t, b, "r", dialTimeout)

	const unit = "virtiofsd@r.service"
	assert.Equal(t, "1000000", show(t, b, unit, "LimitNOFILE")["LimitNOFILE"], "the unit asks for what virtiofsd wants")
	main := show(t, b, unit, "MainPID")["MainPID"]
	kids := children(t, b, main)
	require.Len(t, kids, 1, "the shim's one child, virtiofsd")
	soft, hard := nofile(t, b, kids[0])

	// What systemd could give: the unit's value, or, without
	// CAP_SYS_RESOURCE, no more than its own hard limit.
	want := uint64(1000000)
	if !canRaiseLimits(t, b, "1") {
		_, managerHard := nofile(t, b, "1")
		want = min(want, managerHard)
	}
	assert.Equal(t, [2]uint64{want, want}, [2]uint64{soft, hard}, "virtiofsd's RLIMIT_NOFILE (soft, hard)")

	waitJournal(t, b, "Client connected, servicing requests", "-u", unit)
	var warned []string
	for _, m := range shimbox.Messages(journal(t, b, "-u", unit, "SYSLOG_IDENTIFIER=virtiofsd")) {
		if strings.HasPrefix(m, rlimitWarning) {
			warned = append(warned, m)
		}
	}
	if want == 1000000 {
		assert.Empty(t, warned, "with LimitNOFILE=1000000 in effect the Rust virtiofsd has nothing to warn about")
	} else {
		t.Logf("this manager cannot raise RLIMIT_NOFILE past %d (no CAP_SYS_RESOURCE): the warning stays, as docs/virtiofsd.md explains", want)
		assert.Equal(t, []string{fmt.Sprintf("%s1000000, the hard limit (%d) of open file descriptors is used instead.", rlimitWarning, want)},
			warned, "the warning names the hard limit the unit got")
	}
}
