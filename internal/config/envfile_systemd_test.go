package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// environmentDGenerator reads environment.d files with the same parser as
// EnvironmentFile= (load_env_file_pairs) and prints what it read, quoted
// where needed, in the same syntax.
const environmentDGenerator = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// TestEnvFileAgreesWithSystemd feeds every accepted case to the installed
// systemd's own parser and compares the values.
func TestEnvFileAgreesWithSystemd(t *testing.T) {
	if _, err := os.Stat(environmentDGenerator); err != nil {
		t.Skipf("systemd's environment.d generator is not installed: %v", err)
	}
	baseline := runGenerator(t, "")
	for _, tt := range envFileCases {
		if strings.Contains(tt.in, "$") {
			continue // environment.d expands variables; EnvironmentFile= does not
		}
		t.Run(tt.name, func(t *testing.T) {
			got := runGenerator(t, tt.in)
			for k := range baseline {
				delete(got, k)
			}
			want := make(map[string]string)
			for _, a := range tt.want {
				switch {
				case !envName.MatchString(a.key): // systemd drops invalid names
				case a.value == "": // environment.d refuses empty values
				default:
					// The generator prints a newline as \n, which reads
					// back as backslash, n.
					want[a.key] = strings.ReplaceAll(a.value, "\n", `\n`)
				}
			}
			assert.Equal(t, want, got)
		})
	}
}

// runGenerator returns the variables systemd reads from a file holding text.
func runGenerator(t *testing.T, text string) map[string]string {
	t.Helper()
	home := t.TempDir()
	dir := filepath.Join(home, "environment.d")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "test.conf"), []byte(text), 0o600))
	cmd := exec.Command(environmentDGenerator)
	cmd.Env = []string{"XDG_CONFIG_HOME=" + home}
	out, err := cmd.Output()
	require.NoError(t, err)
	as, err := parseEnvFile(out, "generator output")
	require.NoError(t, err, "%s", out)
	vars := make(map[string]string)
	for _, a := range as {
		vars[a.key] = a.value
	}
	return vars
}
