package activation

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary be the process systemd passed descriptors
// to (see compareFiles).
func TestMain(m *testing.M) {
	if os.Getenv("ACTIVATION_TEST_COMPARE") != "" {
		os.Exit(compareFiles())
	}
	os.Exit(m.Run())
}

// filesResult is what a Files call shows: the files' names and numbers,
// whether each is close-on-exec, and what is left of LISTEN_*.
func filesResult(files []*os.File) string {
	var b strings.Builder
	for _, f := range files {
		flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		fmt.Fprintf(&b, "%d=%s cloexec=%v err=%v; ", f.Fd(), f.Name(), flags&unix.FD_CLOEXEC != 0, err)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		v, ok := os.LookupEnv(k)
		fmt.Fprintf(&b, "%s=%q(%v) ", k, v, ok)
	}
	return b.String()
}

// compareFiles runs Files and go-systemd's activation.Files on the same
// environment and descriptors, and prints both results.
func compareFiles() int {
	if os.Getenv("LISTEN_PID") == "self" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	unset := os.Getenv("ACTIVATION_TEST_UNSET") != ""
	env := map[string]string{}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	ours := filesResult(Files(unset))
	// The same start for the library: the variables back, close-on-exec off.
	for k, v := range env {
		os.Setenv(k, v)
	}
	for fd := 3; fd < 6; fd++ {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	theirs := filesResult(sdactivation.Files(unset))
	fmt.Printf("ours:   %s\ntheirs: %s\n", ours, theirs)
	return 0
}

// TestFilesIsGoSystemdActivationFiles pins Files, a copy kept to leave
// crypto/tls out of the binary, to the library's behaviour.
func TestFilesIsGoSystemdActivationFiles(t *testing.T) {
	var extra []*os.File
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		t.Cleanup(func() { r.Close(); w.Close() })
		extra = append(extra, r)
	}
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"one named socket", []string{"LISTEN_PID=self", "LISTEN_FDS=1", "LISTEN_FDNAMES=vhost-user"}},
		{"one unnamed socket", []string{"LISTEN_PID=self", "LISTEN_FDS=1"}},
		{"three, some named", []string{"LISTEN_PID=self", "LISTEN_FDS=3", "LISTEN_FDNAMES=a::"}},
		{"more than named", []string{"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=a"}},
		{"another process", []string{"LISTEN_PID=1", "LISTEN_FDS=1"}},
		{"none", []string{"LISTEN_PID=self", "LISTEN_FDS=0"}},
		{"a bad count", []string{"LISTEN_PID=self", "LISTEN_FDS=x"}},
		{"no variables", nil},
	} {
		for _, unset := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, unset %v", tc.name, unset), func(t *testing.T) {
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), "ACTIVATION_TEST_COMPARE=1")
				cmd.Env = append(cmd.Env, tc.env...)
				if unset {
					cmd.Env = append(cmd.Env, "ACTIVATION_TEST_UNSET=1")
				}
				cmd.ExtraFiles = extra
				out, err := cmd.Output()
				require.NoError(t, err)
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				require.Len(t, lines, 2, "%s", out)
				ours, theirs := strings.TrimPrefix(strings.TrimSpace(lines[0]), "ours:   "), strings.TrimPrefix(strings.TrimSpace(lines[1]), "theirs: ")
				assert.Equal(t, theirs, ours)
				t.Log(ours)
			})
		}
	}
}
