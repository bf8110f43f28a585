package config

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every refusal is an *Error
// naming the file and a line inside it, and that every accepted configuration
// holds the documented invariants. It also checks that the environment file
// reader reads back what it read, re-encoded in double quotes.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"SHARED_DIR=/srv/vm1\n",
		"# vm1\nSHARED_DIR=/srv/vm1\nCACHE=none\nVIRTIOFSD=/usr/libexec/virtiofsd\nFLAVOR=rust\n" +
			"SANDBOX=chroot\nTHREAD_POOL_SIZE=0\nXATTR=yes\nANNOUNCE_SUBMOUNTS=false\nREADONLY=1\n" +
			"READY_TIMEOUT=1m30s\nSTOP_TIMEOUT=10\nEXTRA_ARGS=\"--modcaps=-mknod -o 'a=b c'\"\n",
		"SHARED_DIR = '/srv/vm 1'  \r\n; c\r\n",
		"SHARED_DIR=\"/srv/\\\"x\\\\\" \\\n",
		"SHARED_DIR=/a\\\n/b\nEXTRA_ARGS=--a \\\n --b\n",
		"# x \\\nSHARED_DIR=/srv\n",
		"SHARED_DIR=/srv\nCACHE=never\nCACHE=auto\n",
		"SHARED_DIR='/srv\n",
		"cache=auto\n=x\nA B\n",
		"SHARED_DIR=/srv\nSTOP_TIMEOUT=99999999999\nREADY_TIMEOUT=1ns\n",
		"\ufeffSHARED_DIR=/srv\x00\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		const name = "/etc/virtiofsd/fuzz.conf"
		as, err := parseEnvFile([]byte(in), name)
		if err == nil {
			checkRoundTrip(t, as)
		}

		c, err := Parse(strings.NewReader(in), name)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, not *Error: %v", err, err)
			}
			for _, ce := range Problems(err) {
				if ce.File != name || ce.Line < 0 || ce.Line > strings.Count(in, "\n")+1 {
					t.Fatalf("error names %s:%d: %v", ce.File, ce.Line, err)
				}
			}
			if c != nil {
				t.Fatalf("config %+v returned with error %v", c, err)
			}
			return
		}
		checkInvariants(t, c)
		c2, err := Parse(strings.NewReader(in), name)
		if err != nil || !equalConfig(c, c2) {
			t.Fatalf("second parse differs: %+v, %v", c2, err)
		}

	})
}

// checkRoundTrip re-encodes assignments in double quotes and reads them back.
func checkRoundTrip(t *testing.T, as []assignment) {
	t.Helper()
	var enc strings.Builder
	for _, a := range as {
		enc.WriteString(a.key + "=" + quoteDouble(a.value) + "\n")
	}
	back, err := parseEnvFile([]byte(enc.String()), "roundtrip.conf")
	if err != nil {
		t.Fatalf("re-encoded file refused: %v\n%s", err, enc.String())
	}
	if len(back) != len(as) {
		t.Fatalf("re-encoded file has %d assignments, want %d", len(back), len(as))
	}
	for i := range as {
		if back[i].key != as[i].key || back[i].value != as[i].value {
			t.Fatalf("re-encoded %q=%q reads back as %q=%q", as[i].key, as[i].value, back[i].key, back[i].value)
		}
	}
}

// quoteDouble quotes v for a systemd environment file.
func quoteDouble(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		if strings.ContainsRune(envShellNeedsEscape, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if !filepath.IsAbs(c.SharedDir) {
		t.Fatalf("SharedDir %q is not absolute", c.SharedDir)
	}
	if c.Virtiofsd != "" && !filepath.IsAbs(c.Virtiofsd) {
		t.Fatalf("Virtiofsd %q is not absolute", c.Virtiofsd)
	}
	if !slices.Contains([]string{"", "auto", "always", "never", "metadata"}, c.Cache) {
		t.Fatalf("Cache %q", c.Cache)
	}
	if !slices.Contains([]string{"auto", "c", "rust"}, c.Flavor) {
		t.Fatalf("Flavor %q", c.Flavor)
	}
	if !slices.Contains([]string{"", "namespace", "chroot", "none"}, c.Sandbox) {
		t.Fatalf("Sandbox %q", c.Sandbox)
	}
	if c.ThreadPoolSize != nil && *c.ThreadPoolSize < 0 {
		t.Fatalf("ThreadPoolSize %d", *c.ThreadPoolSize)
	}
	if c.ReadyTimeout < 0 || c.StopTimeout < 0 {
		t.Fatalf("timeouts %v %v", c.ReadyTimeout, c.StopTimeout)
	}
	if c.ExtraArgs != nil && len(c.ExtraArgs) == 0 {
		t.Fatal("ExtraArgs empty but not nil")
	}
	for _, s := range append([]string{c.SharedDir, c.Virtiofsd}, c.ExtraArgs...) {
		if strings.ContainsRune(s, 0) {
			t.Fatalf("NUL in %q", s)
		}
	}
}

func equalConfig(a, b *Config) bool {
	eqInt := func(x, y *int) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqBool := func(x, y *bool) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.Instance == b.Instance && a.Path == b.Path && a.SharedDir == b.SharedDir &&
		a.Cache == b.Cache && a.Virtiofsd == b.Virtiofsd && a.Flavor == b.Flavor &&
		a.Sandbox == b.Sandbox && eqInt(a.ThreadPoolSize, b.ThreadPoolSize) &&
		eqBool(a.Xattr, b.Xattr) && eqBool(a.AnnounceSubmounts, b.AnnounceSubmounts) &&
		eqBool(a.Readonly, b.Readonly) && a.ReadyTimeout == b.ReadyTimeout &&
		a.StopTimeout == b.StopTimeout && slices.Equal(a.ExtraArgs, b.ExtraArgs)
}
