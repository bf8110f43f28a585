package plan

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

func TestTheFrontRunsOnlyWhereVirtiofsdCanSaveItsState(t *testing.T) {
	rust := virtiofsd.Version{Flavor: virtiofsd.Rust, Number: "1.13.2", Features: []string{"migrate-precopy", "separate-options"}}
	oldRust := virtiofsd.Version{Flavor: virtiofsd.Rust, Number: "1.10.0", Features: []string{}}
	c := virtiofsd.Version{Flavor: virtiofsd.C, Number: "7.2.22", Features: []string{}}
	pool := 4
	for _, tc := range []struct {
		name      string
		cfg       config.Config
		v         virtiofsd.Version
		front     bool
		swap      bool
		why, swhy string
	}{
		{"rust, auto", config.Config{Front: "auto"}, rust, true, true, "", ""},
		{"rust, FRONT=no", config.Config{Front: "no", Path: "/etc/virtiofsd/vm1.conf"}, rust, false, false, "FRONT=no in /etc/virtiofsd/vm1.conf", ""},
		{"the C virtiofsd", config.Config{Front: "auto"}, c, false, false, "a live swap needs the Rust virtiofsd", ""},
		{"a Rust virtiofsd without state transfer", config.Config{Front: "auto"}, oldRust, false, false, "cannot save its state", ""},
		{"a thread pool", config.Config{Front: "auto", ThreadPoolSize: &pool}, rust, true, false, "", "THREAD_POOL_SIZE=4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{Config: &tc.cfg, Binary: "/usr/libexec/virtiofsd", Version: tc.v}
			front, why := Front(p)
			assert.Equal(t, tc.front, front)
			assert.Contains(t, why, tc.why)
			swap, swhy := LiveSwap(p)
			assert.Equal(t, tc.swap, swap)
			if tc.swhy != "" {
				assert.Contains(t, swhy, tc.swhy)
			}
		})
	}
}

// The virtiofsd that resumes a session after a restart lets a file it
// cannot carry fail in the guest alone, whatever MIGRATION_ON_ERROR says;
// the plan for later starts is unchanged.
func TestResumedVirtiofsdFailsOnlyTheFileItCannotCarry(t *testing.T) {
	rust := virtiofsd.Version{Flavor: virtiofsd.Rust, Number: "1.13.2", Features: []string{"migrate-precopy"}}
	p := &Plan{Version: rust, Args: []string{"--fd=3", "--migration-on-error=abort", "--inode-file-handles=never"}}
	r := ForResume(p)
	assert.Equal(t, []string{"--fd=3", "--inode-file-handles=never", "--migration-on-error=guest-error"}, r.Args)
	assert.Equal(t, []string{"--fd=3", "--migration-on-error=abort", "--inode-file-handles=never"}, p.Args)

	old := &Plan{Version: virtiofsd.Version{Flavor: virtiofsd.Rust, Number: "1.10.0", Features: []string{}}, Args: []string{"--fd=3"}}
	assert.Equal(t, []string{"--fd=3"}, ForResume(old).Args, "no live migration, no such option")
	c := &Plan{Version: virtiofsd.Version{Flavor: virtiofsd.C}, Args: []string{"--fd=3"}}
	assert.Equal(t, []string{"--fd=3"}, ForResume(c).Args)
}
