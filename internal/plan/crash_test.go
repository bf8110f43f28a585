package plan

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

func TestACrashIsRecoveredOnlyWithTheFrontAndNoThreadPool(t *testing.T) {
	rust := virtiofsd.Version{Flavor: virtiofsd.Rust, Number: "1.13.2", Features: []string{"migrate-precopy"}}
	c := virtiofsd.Version{Flavor: virtiofsd.C, Number: "7.2.22", Features: []string{}}
	pool, none := 4, 0
	for _, tc := range []struct {
		name      string
		cfg       config.Config
		v         virtiofsd.Version
		recovered bool
		says      string
	}{
		{"rust with the front", config.Config{Front: "auto"}, rust, true,
			"a fresh virtiofsd serves the VM, degraded: the guest's requests fail with EBADF until it umounts and mounts the share with nothing held open on it; " +
				"at the 5th crash within 1m0s the shim gives up (exit status 71) and the share hangs until the VM restarts"},
		{"THREAD_POOL_SIZE=0", config.Config{Front: "auto", ThreadPoolSize: &none}, rust, true, "a fresh virtiofsd serves the VM"},
		{"a thread pool", config.Config{Front: "auto", ThreadPoolSize: &pool, Path: "/etc/virtiofsd/vm1.conf"}, rust, false,
			"the guest's share hangs until the VM restarts (/etc/virtiofsd/vm1.conf:0: THREAD_POOL_SIZE=4: virtiofsd may complete requests out of order"},
		{"FRONT=no", config.Config{Front: "no", Path: "/etc/virtiofsd/vm1.conf"}, rust, false,
			"the guest's share hangs until the VM restarts (the shim is not the VM's end of the socket: FRONT=no in /etc/virtiofsd/vm1.conf)"},
		{"the C virtiofsd", config.Config{Front: "auto"}, c, false, "the guest's share hangs until the VM restarts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{Config: &tc.cfg, Binary: "/usr/libexec/virtiofsd", Version: tc.v}
			ok, says := CrashRecovery(p)
			assert.Equal(t, tc.recovered, ok)
			assert.Contains(t, says, tc.says)
			assert.Equal(t, tc.cfg.ThreadPoolSize != nil && *tc.cfg.ThreadPoolSize > 0, ThreadPool(p))
		})
	}
}
