package virtiofsd

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArgsRootless(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"namespace sandbox chosen", Options{SharedDir: "/s", Unprivileged: true},
			[]string{"--fd=3", "--shared-dir=/s", "--cache=auto", "--sandbox=namespace", "--log-level=info", "--inode-file-handles=never"}},
		{"none kept", Options{SharedDir: "/s", Unprivileged: true, Sandbox: "none"},
			[]string{"--fd=3", "--shared-dir=/s", "--cache=auto", "--sandbox=none", "--log-level=info", "--inode-file-handles=never"}},
		{"maps passed", Options{SharedDir: "/s", Unprivileged: true, UIDMap: ":0:100000:65536:", GIDMap: ":0:100000:65536:"},
			[]string{"--fd=3", "--shared-dir=/s", "--cache=auto", "--sandbox=namespace", "--log-level=info",
				"--uid-map=:0:100000:65536:", "--gid-map=:0:100000:65536:", "--inode-file-handles=never"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Args(Rust, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestArgsRootlessRefusesTheCFlavorAsUnavailable(t *testing.T) {
	_, err := Args(C, Options{SharedDir: "/s", Unprivileged: true})
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrNeedsRust))
	assert.True(t, errors.Is(err, ErrBinary), "exit status 69: the fix is to install the Rust virtiofsd")
	assert.False(t, errors.Is(err, ErrOptions))
	assert.Contains(t, err.Error(), "apt install virtiofsd")
	assert.Contains(t, err.Error(), "dnf install virtiofsd")
}

func TestArgsRootlessRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		key  string
		want string
	}{
		{"chroot needs root", Options{SharedDir: "/s", Unprivileged: true, Sandbox: "chroot"}, "SANDBOX", "SANDBOX=chroot needs root"},
		{"map without namespace", Options{SharedDir: "/s", Unprivileged: true, Sandbox: "none", GIDMap: ":0:1000:1:"}, "GID_MAP", "SANDBOX=none"},
		{"map as root", Options{SharedDir: "/s", UIDMap: ":0:1000:1:"}, "UID_MAP", "for rootless instances"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Args(Rust, tc.opts)
			var oe *OptionsError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, tc.key, oe.Key)
			assert.Contains(t, oe.Msg, tc.want)
		})
	}
}
