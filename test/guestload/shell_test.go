package guestload

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runShell runs the shell workload on dir with the host's shell sh (a path
// or busybox, as "busybox sh") and returns its output.
func runShell(t *testing.T, sh []string, dir string, p ShellParams) string {
	t.Helper()
	script, err := ShellScript(dir, "auto", p)
	require.NoError(t, err)
	cmd := exec.Command(sh[0], append(sh[1:], "-e", "-c", script)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

func TestShellWorkloadReportsEachStepAndLeavesTheShareAsItFoundIt(t *testing.T) {
	shells := map[string][]string{"sh": {"/bin/sh"}}
	if bb, err := exec.LookPath("busybox"); err == nil {
		shells["busybox sh"] = []string{bb, "sh"} // the guest's shell
	}
	for name, sh := range shells {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := runShell(t, sh, dir, TinyShell())

			recs := ParseRecords(out)
			require.Len(t, recs, 2, out)
			assert.Equal(t, Record{Event: "begin", Share: "auto", Group: ShellGroup}, recs[0])
			res := recs[1]
			assert.Equal(t, "result", res.Event)
			assert.True(t, res.OK, res.Error)
			assert.Equal(t, 1, res.N)
			assert.Equal(t, "run", res.Unit)
			assert.GreaterOrEqual(t, res.NS, int64(0))
			var sum int64
			for _, step := range ShellSteps {
				d, ok := res.Steps[step]
				assert.True(t, ok, "step %s missing: %s", step, out)
				assert.GreaterOrEqual(t, d, int64(0), step)
				sum += d
			}
			assert.Len(t, res.Steps, len(ShellSteps))
			assert.Equal(t, res.NS, sum, "the steps add up to the whole")
			assert.Contains(t, Results(recs), "auto/"+ShellGroup)

			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries, "what the workload made is gone")
		})
	}
}

func TestShellWorkloadReportsFilesThatReadBackWrong(t *testing.T) {
	// A share whose files all read back "0": a file system that lost writes.
	dir := t.TempDir()
	script, err := ShellScript(dir, "auto", TinyShell())
	require.NoError(t, err)
	stub := filepath.Join(t.TempDir(), "sh")
	// echo $i > f$i writes 0 whatever i is: a shell function in its place.
	require.NoError(t, os.WriteFile(stub, []byte("echo() { if [ $# = 1 ] && [ \"$1\" -ge 0 ] 2>/dev/null; then command echo 0; else command echo \"$@\"; fi; }\n"+script), 0o644))
	out, err := exec.Command("/bin/sh", "-e", stub).CombinedOutput()
	require.NoError(t, err, "%s", out)

	res := Results(ParseRecords(string(out)))["auto/"+ShellGroup]
	assert.False(t, res.OK)
	assert.Equal(t, "19 files read back another content", res.Error)
}

func TestShellScriptRefusesBadSizesAndUnsafeNames(t *testing.T) {
	_, err := ShellScript("/mnt/auto", "auto", ShellParams{Files: 0, MiB: 1})
	assert.ErrorContains(t, err, "sizes must be >= 1")
	_, err = ShellScript("/mnt/a b", "auto", TinyShell())
	assert.ErrorContains(t, err, `"/mnt/a b" cannot go into the shell workload unquoted`)
	_, err = ShellScript("/mnt/auto", `a"b`, TinyShell())
	assert.ErrorContains(t, err, "unquoted")
}
