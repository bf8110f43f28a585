package check

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
)

func TestMain(m *testing.M) {
	fakevirtiofsd.Main() // the test binary doubles as a fake virtiofsd
	os.Exit(m.Run())
}

// fakeBinary is a script that execs the test binary as a fake virtiofsd.
func fakeBinary(t *testing.T, flavor string) string {
	t.Helper()
	p, err := fakevirtiofsd.Script(t.TempDir(), flavor)
	require.NoError(t, err)
	return p
}

// testInstance is a name no real instance of the machine has: the system
// scope's state is read from /run.
const testInstance = "vm-check-unit-test"

// checkConfig checks testInstance with content as its config, in a system
// scope whose generator output folder is empty.
func checkConfig(t *testing.T, content string) (*Report, error) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, testInstance+".conf"), []byte(content), 0o644))
	return Run(context.Background(), Options{
		Scope: config.System, Instance: testInstance, ConfigDir: dir, GeneratorDir: t.TempDir(),
		Env:           func(string) string { return "" },
		Versions:      virtiofsd.VersionCache{},
		ProcessExists: func(int) bool { return false },
		LookupUser:    func(string) error { return nil },
		LookupGroup:   func(string) error { return os.ErrNotExist },
	})
}

func codes(fs []Finding) []string {
	var l []string
	for _, f := range fs {
		l = append(l, f.Code)
	}
	return l
}

// The new user: a bad value on line 2 and a typo on line 3 are both
// reported by one check, each at its line, and the typo names the key meant.
func TestCheckReportsEveryProblemOfAConfigInOneRun(t *testing.T) {
	r, err := checkConfig(t, "# vm1\nCACHE=sometimes\nSHARD_DIR=/srv/vm1\n")
	require.Error(t, err)
	assert.Equal(t, exitcode.Config, exitcode.For(err), "the exit status run would have")
	assert.False(t, r.OK)
	errs := r.Errors()
	require.Len(t, errs, 2)
	assert.Equal(t, []string{config.CodeBadValue, config.CodeUnknownKey}, codes(errs))
	assert.Equal(t, 2, errs[0].Line)
	assert.Equal(t, 3, errs[1].Line)
	assert.True(t, strings.HasSuffix(errs[0].File, testInstance+".conf"))
	assert.Contains(t, errs[0].Message, "CACHE=sometimes: not allowed")
	assert.Equal(t, "unknown key SHARD_DIR: did you mean SHARED_DIR?", errs[1].Message)
}

func TestCheckOfAValidConfigGivesFactsWarningsAndReady(t *testing.T) {
	share := t.TempDir()
	r, err := checkConfig(t, "SHARED_DIR="+share+"\nVIRTIOFSD="+fakeBinary(t, "c")+"\nTHREAD_POOL_SIZE=4\nSOCKET_MODE=0666\nSOCKET_GROUP=nosuchgroup\n")
	require.NoError(t, err)
	assert.True(t, r.OK)
	assert.Empty(t, r.Errors())
	assert.Equal(t, []string{CodeSocketModeWide, CodeSocketGroupUnknown, CodeDropInNotApplied, CodeDropInNotApplied, CodeThreadPoolC},
		codes(r.Warnings()))
	w := r.Warnings()
	assert.Equal(t, 4, w[0].Line, "SOCKET_MODE's line")
	assert.Equal(t, "SOCKET_MODE=0660", w[0].Fix)
	assert.Equal(t, 3, w[4].Line, "THREAD_POOL_SIZE's line")
	assert.Equal(t, "systemctl daemon-reload", w[2].Fix)

	facts := map[string]string{}
	for _, f := range r.Findings {
		if f.Kind == Fact {
			facts[f.Code] = f.Message
		}
	}
	assert.Equal(t, share, facts[CodeSharedDir])
	assert.Contains(t, facts[CodeCommand], "--thread-pool-size=4")
	assert.Equal(t, "the socket is passed as fd 3 by systemd (virtiofsd@"+testInstance+".socket)", facts[CodeReady])
	last := r.Findings[len(r.Findings)-1]
	assert.Equal(t, CodeReady, last.Code, "ready comes last")
}

func TestCheckNamesAMissingVirtiofsdAsAnError(t *testing.T) {
	r, err := checkConfig(t, "SHARED_DIR="+t.TempDir()+"\nVIRTIOFSD=/nonexistent/virtiofsd\n")
	assert.Equal(t, exitcode.Unavailable, exitcode.For(err))
	assert.Equal(t, []string{CodeVirtiofsdUnavailable}, codes(r.Errors()))
	assert.Contains(t, r.Errors()[0].Message, "/nonexistent/virtiofsd")
}

func TestCheckReportIsJSONWithKindCodeAndLine(t *testing.T) {
	r, _ := checkConfig(t, "SHARED_DIR=/srv/vm1\nSHARD_DIR=x\n")
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var got struct {
		Instance string
		Scope    string
		OK       bool
		Findings []map[string]any
	}
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, testInstance, got.Instance)
	assert.Equal(t, "system", got.Scope)
	assert.False(t, got.OK)
	require.NotEmpty(t, got.Findings)
	assert.Equal(t, "error", got.Findings[0]["kind"])
	assert.Equal(t, "unknown-key", got.Findings[0]["code"])
	assert.EqualValues(t, 2, got.Findings[0]["line"])
	assert.NotContains(t, got.Findings[0], "fix", "empty fields are left out")
}

// Scripts read check --json by code: the man page lists every one.
func TestManPageListsEveryFindingCode(t *testing.T) {
	b, err := os.ReadFile("../../packaging/virtiofsd-shim.8")
	require.NoError(t, err)
	page := strings.ReplaceAll(string(b), `\-`, "-")
	for _, c := range Codes() {
		listed := regexp.MustCompile(`(?m)^\.BR? ` + regexp.QuoteMeta(c) + `( |$)`).MatchString(page)
		assert.True(t, listed, "virtiofsd-shim(8) does not list the code %s", c)
	}
}

func TestCheckSaysWhatAVirtiofsdCrashMeansForTheInstance(t *testing.T) {
	share := t.TempDir()
	crash := func(t *testing.T, content string) string {
		t.Helper()
		r, err := checkConfig(t, "SHARED_DIR="+share+"\n"+content)
		require.NoError(t, err)
		for _, f := range r.Findings {
			if f.Code == CodeCrash {
				assert.Equal(t, Fact, f.Kind)
				return f.Message
			}
		}
		t.Fatal("no crash fact")
		return ""
	}
	assert.Contains(t, crash(t, "VIRTIOFSD="+fakeBinary(t, "c")+"\n"),
		"not recovered: the VM's connection ends with virtiofsd, and the guest's share hangs until the VM restarts")
	assert.Contains(t, crash(t, "VIRTIOFSD="+fakeBinary(t, "rust")+"\nFRONT=no\n"),
		"not recovered: the VM's connection ends with virtiofsd, and the guest's share hangs until the VM restarts (the shim is not the VM's end of the socket: FRONT=no")
}
