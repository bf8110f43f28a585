package logsink

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestUnitOf(t *testing.T) {
	const hostInit = "0::/init.scope\n"
	for _, tc := range []struct{ name, self, init, want string }{
		{"template instance", "0::/system.slice/system-virtiofsd.slice/virtiofsd@vm1.service\n", hostInit, "virtiofsd@vm1.service"},
		{"delegated subgroup", "0::/system.slice/x.service/payload\n", hostInit, "x.service"},
		{"scope", "0::/user.slice/user-0.slice/session-3.scope\n", hostInit, "session-3.scope"},
		{"PID 1 unreadable", "0::/system.slice/x.service\n", "", "x.service"},
		{"hybrid host: name=systemd wins",
			"12:pids:/\n1:name=systemd:/system.slice/virtiofsd@a.service\n0::/\n",
			"1:name=systemd:/init.scope\n0::/\n", "virtiofsd@a.service"},
		{"systemd in a container without a cgroup namespace",
			"1:name=systemd:/sdbox/sdbox-1/system.slice/system-virtiofsd.slice/virtiofsd@x.service\n",
			"1:name=systemd:/sdbox/sdbox-1/init.scope\n", "virtiofsd@x.service"},
		{"container's root is a scope",
			"0::/system.slice/docker-ab.scope/system.slice/x.service\n",
			"0::/system.slice/docker-ab.scope/init.scope\n", "x.service"},
		{"PID 1 itself", hostInit, hostInit, "init.scope"},
		{"root cgroup", "0::/\n", hostInit, ""},
		{"only slices", "0::/system.slice\n", hostInit, ""},
		{"no systemd hierarchy", "5:cpu:/system.slice/x.service\n", hostInit, ""},
		{"empty", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, unitOf(tc.self, tc.init))
		})
	}
}

func TestUserUnitOf(t *testing.T) {
	const hostInit = "0::/init.scope\n"
	for _, tc := range []struct{ name, self, init, want string }{
		{"user instance", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-virtiofsd.slice/virtiofsd@vm1.service\n", hostInit, "virtiofsd@vm1.service"},
		{"in a box without a cgroup namespace",
			"1:name=systemd:/sdbox/sdbox-1/user.slice/user-1000.slice/user@1000.service/app.slice/virtiofsd@x.service\n",
			"1:name=systemd:/sdbox/sdbox-1/init.scope\n", "virtiofsd@x.service"},
		{"the user manager itself", "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n", hostInit, "init.scope"},
		{"a system service", "0::/system.slice/virtiofsd@vm1.service\n", hostInit, ""},
		{"empty", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, userUnitOf(tc.self, tc.init))
		})
	}
}
