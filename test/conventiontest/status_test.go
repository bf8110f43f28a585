package conventiontest

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// inspects is a call that takes a string apart or matches it.
var inspects = regexp.MustCompile(`\b(strings|bytes)\.(HasPrefix|HasSuffix|Contains|ContainsAny|Cut|CutPrefix|CutSuffix|Fields|FieldsFunc|Split|SplitN|Index|LastIndex|TrimPrefix|TrimSuffix|EqualFold)\(|\bregexp\.|\.(FindString|FindStringSubmatch|FindAllString|MatchString)\(|\bfmt\.Sscan`)

// statusWords are the beginnings of the texts the shim sends as STATUS=
// (for people), and the pieces of them old code fished pids out of.
var statusWords = regexp.MustCompile(`"(Serving|Waiting |Waiting for a|Starting virtiofsd \(|Stopping virtiofsd \(|Releasing the socket|Client disconnected)|standby for session|virtiofsd pid|virtiofsd \(pid|\\\(pid`)

// sentStatus is a literal of a whole sd_notify datagram: a test of what the
// shim sends, not a reading of it.
var sentStatus = regexp.MustCompile(`"(READY=1\\n)?STATUS=`)

// parsesStatus tells whether a line of Go reads STATUS= text back: it
// inspects a string on a line that names the StatusText property, or it
// inspects a string against the status texts' words.
func parsesStatus(line string) bool {
	switch {
	case strings.Contains(line, "fmt.Sscan"):
		return strings.Contains(line, "STATUS=") || strings.Contains(line, "StatusText") || statusWords.MatchString(line)
	case !inspects.MatchString(line):
		return false
	case strings.Contains(line, "StatusText"):
		return true
	case statusArg.MatchString(line):
		return true
	}
	return statusWords.MatchString(line) && !sentStatus.MatchString(line)
}

// statusArg is a string inspection of a variable named for a status text
// (status, statusText, st.StatusText...), whatever it is compared with.
var statusArg = regexp.MustCompile(`\b(strings|bytes)\.\w+\(\s*[\w.\[\]"]*\b(status|statusText)\b\s*[,)]`)

func TestTheMatcherCatchesWhatOldCodeDid(t *testing.T) {
	for _, bad := range []string{
		`func (s svcState) serving() bool { return strings.HasPrefix(s.status, "Serving") }`,
		`case strings.HasPrefix(s.StatusText, "Waiting ") && strings.Contains(s.StatusText, ", standby for session "):`,
		"var statusPID = regexp.MustCompile(`virtiofsd(?: \\(pid| pid) ([0-9]+)\\b`)",
		`if m := statusPIDRe.FindStringSubmatch(last); m != nil && strings.HasPrefix(last, "Waiting ") && m[1] != prev {`,
		`if last = show(t, b, unit, "StatusText")["StatusText"]; strings.HasPrefix(last, prefix) {`,
		`_, rest, ok := strings.Cut(status, "virtiofsd pid ")`,
		`assert.Contains(t, []string{"Waiting", "Serving"}, strings.Fields(p["StatusText"])[0])`,
		`_, err := fmt.Sscanf(starting, "STATUS=Starting virtiofsd (pid %d)", &pid)`,
		`if strings.HasPrefix(status, prefix) {`,
	} {
		assert.True(t, parsesStatus(bad), bad)
	}
	for _, good := range []string{
		`assert.Contains(t, p["StatusText"], "on /run/virtiofsd/"+inst+".sock, sharing "+dir+" ", inst)`, // what people read
		`ss.notify(fmt.Sprintf("STATUS=Serving a vhost-user client on %s", p))`,                          // what the shim sends
		`assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Serving"))`,                          // a test of what it sends
		`if st.Phase == state.Serving {`,
		`assert.True(t, strings.HasPrefix(starting, "STATUS=Starting virtiofsd (pid "))`,
		`if e["SYSLOG_IDENTIFIER"] == "systemd" && strings.HasPrefix(m, "Starting virtiofsd@x.service") {`, // systemd's own line
	} {
		assert.False(t, parsesStatus(good), good)
	}
}

// TestNothingParsesStatusText: the typed state (internal/state) is the
// only source of what an instance is doing. STATUS= is for people, and no
// Go file of the repository, product or test, reads it back.
func TestNothingParsesStatusText(t *testing.T) {
	root := testdir.RepoRoot()
	self, err := filepath.Abs("status_test.go")
	require.NoError(t, err)
	var found []string
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || path == self {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			if parsesStatus(sc.Text()) {
				rel, _ := filepath.Rel(root, path)
				found = append(found, rel+":"+itoa(n)+": "+strings.TrimSpace(sc.Text()))
			}
		}
		return sc.Err()
	})
	require.NoError(t, err)
	assert.Empty(t, found, "these lines read STATUS= text back: read the typed state (internal/state) instead")
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
