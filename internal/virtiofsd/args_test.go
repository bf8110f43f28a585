package virtiofsd

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArgsPerFlavor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flavor Flavor
		opts   Options
		want   []string
	}{
		{"C defaults", C, Options{SharedDir: "/srv/vm1"},
			[]string{"-f", "--fd=3", "-o", "source=/srv/vm1", "-o", "cache=auto", "-o", "log_level=info"}},
		{"Rust defaults", Rust, Options{SharedDir: "/srv/vm1"},
			[]string{"--fd=3", "--shared-dir=/srv/vm1", "--cache=auto", "--log-level=info", "--inode-file-handles=never"}},
		{"C never is none", C, Options{SharedDir: "/s", Cache: "never"},
			[]string{"-f", "--fd=3", "-o", "source=/s", "-o", "cache=none", "-o", "log_level=info"}},
		{"Rust none is never", Rust, Options{SharedDir: "/s", Cache: "none"},
			[]string{"--fd=3", "--shared-dir=/s", "--cache=never", "--log-level=info", "--inode-file-handles=never"}},
		{"C everything", C, Options{SharedDir: "/s", Cache: "always", Sandbox: "chroot", ThreadPoolSize: 4, Xattr: true,
			AnnounceSubmounts: true, LogLevel: "debug", Extra: []string{"-o", "modcaps=-mknod"}},
			[]string{"-f", "--fd=3", "-o", "source=/s", "-o", "cache=always", "-o", "sandbox=chroot", "-o", "log_level=debug",
				"--thread-pool-size=4", "-o", "xattr", "-o", "announce_submounts", "-o", "modcaps=-mknod"}},
		{"Rust everything", Rust, Options{SharedDir: "/s", Cache: "metadata", Sandbox: "none", ThreadPoolSize: 8, Xattr: true,
			AnnounceSubmounts: true, Readonly: true, Extra: []string{"--modcaps=-mknod", "--killpriv-v2"}},
			[]string{"--fd=3", "--shared-dir=/s", "--cache=metadata", "--sandbox=none", "--log-level=info",
				"--thread-pool-size=8", "--xattr", "--announce-submounts", "--readonly", "--inode-file-handles=never", "--modcaps=-mknod", "--killpriv-v2"}},
		{"Rust extra log level replaces ours", Rust, Options{SharedDir: "/s", Extra: []string{"--log-level", "debug"}},
			[]string{"--fd=3", "--shared-dir=/s", "--cache=auto", "--inode-file-handles=never", "--log-level", "debug"}},
		{"C extra log level replaces ours", C, Options{SharedDir: "/s", Extra: []string{"-o", "log_level=debug"}},
			[]string{"-f", "--fd=3", "-o", "source=/s", "-o", "cache=auto", "-o", "log_level=debug"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Args(tc.flavor, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestArgsRefusesWhatBreaksTheContract(t *testing.T) {
	for _, tc := range []struct {
		flavor Flavor
		opts   Options
		want   string // part of the error
	}{
		{C, Options{}, "no shared directory"},
		{C, Options{SharedDir: "srv"}, "is relative"},
		{C, Options{SharedDir: "/s", Cache: "metadata"}, "CACHE=metadata is not supported by the C virtiofsd"},
		{C, Options{SharedDir: "/s", Sandbox: "none"}, "SANDBOX=none is not supported by the C virtiofsd"},
		{C, Options{SharedDir: "/s", Readonly: true}, "READONLY=yes is not supported by the C virtiofsd"},
		{C, Options{SharedDir: "/s", LogLevel: "warn"}, "would hide virtiofsd's readiness line"},
		{Rust, Options{SharedDir: "/s", LogLevel: "error"}, "would hide virtiofsd's readiness line"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--fd=4"}}, `"--fd=4" refused`},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--socket-path", "/tmp/x"}}, "belongs to the .socket unit"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--socket=/x"}}, "belongs to the .socket unit"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--syslog"}}, "must write to stderr"},
		{C, Options{SharedDir: "/s", Extra: []string{"--daemonize"}}, "foreground"},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "debug"}}, "LOG_LEVEL=debug"},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "flock,source=/etc"}}, "one per instance"},
		{C, Options{SharedDir: "/s", Extra: []string{"-osource=/etc"}}, "one per instance"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--shared-dir", "/etc"}}, "one per instance"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--log-level=off"}}, "would hide"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"-o", "log_level=debug"}}, "takes --log-level"},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "log_level=err"}}, "would hide"},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "loglevel=debug"}}, "knows -o log_level=LEVEL, not loglevel"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"-o", "loglevel=debug"}}, "takes --log-level"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--cache=always"}}, "set CACHE="},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "xattr"}}, "set XATTR="},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--print-capabilities"}}, "exit without serving"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"-o"}}, "needs a value"},
		{Auto, Options{SharedDir: "/s"}, "flavor not known"},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "vhost_user_socket=/tmp/x"}}, "passes the systemd socket as --fd=3 itself"},
		{C, Options{SharedDir: "/s", Extra: []string{"-o", "fd=4"}}, "passes the systemd socket as --fd=3 itself"},
		{C, Options{SharedDir: "/s", Extra: []string{"--modcaps=-mknod"}}, "the C virtiofsd does not know --modcaps: its options are -o NAME[=VALUE] (here: -o modcaps=-mknod)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := Args(tc.flavor, tc.opts)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrOptions), "%v should wrap ErrOptions", err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want Version
		err  bool
	}{
		{"virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022\n", Version{Flavor: C, Number: "7.2.22"}, false},
		{"virtiofsd 1.13.3\n", Version{Flavor: Rust, Number: "1.13.3"}, false},
		{"virtiofsd backend 1.0", Version{}, true},
		{"", Version{}, true},
		{"qemu-storage-daemon version 8.0", Version{}, true},
	} {
		got, err := ParseVersion(tc.out)
		if tc.err {
			assert.Error(t, err, tc.out)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
}

func TestChildEnvDropsWhatIsMeantForTheShim(t *testing.T) {
	env := []string{"PATH=/bin", "LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=x", "NOTIFY_SOCKET=/run/n",
		"WATCHDOG_USEC=1", "WATCHDOG_PID=1", "JOURNAL_STREAM=8:9", "RUNTIME_DIRECTORY=/run/virtiofsd-shim", "RUST_LOG=error", "LANG=C"}
	assert.Equal(t, []string{"PATH=/bin", "RUST_LOG=error", "LANG=C"}, ChildEnv(env, C))
	assert.Equal(t, []string{"PATH=/bin", "LANG=C"}, ChildEnv(env, Rust))
}
