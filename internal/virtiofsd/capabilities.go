package virtiofsd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Features of `virtiofsd --print-capabilities` (vhost-user.json's "features")
// that the shim acts on.
const (
	FeatureMigratePrecopy      = "migrate-precopy"                 // Rust 1.11: live migration (vhost-user state transfer)
	FeaturePosixACLNegotiation = "posix-acl-negotiation-mode"      // Rust 1.14: --posix-acl=never|auto|always
	FeatureSecLabelNegotiation = "security-label-negotiation-mode" // Rust 1.14: --security-label=never|auto|always
)

// ParseCapabilities reads the output of `virtiofsd --print-capabilities`:
// {"type": "fs", "features": [...]}. The C one prints no features.
func ParseCapabilities(out []byte) ([]string, error) {
	var caps struct {
		Type     string   `json:"type"`
		Features []string `json:"features"`
	}
	if err := json.Unmarshal(out, &caps); err != nil {
		return nil, fmt.Errorf("--print-capabilities output is not vhost-user JSON: %v", err)
	}
	if caps.Type != "fs" {
		return nil, fmt.Errorf("--print-capabilities says type %q, not fs: is it virtiofsd?", caps.Type)
	}
	if caps.Features == nil {
		caps.Features = []string{}
	}
	return caps.Features, nil
}

// detectFeatures runs `path --print-capabilities`. A binary that does not
// answer gives nil: its version then decides.
func detectFeatures(ctx context.Context, path string) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--print-capabilities")
	cmd.Stdout = &out
	cmd.WaitDelay = time.Second
	if cmd.Run() != nil {
		return nil
	}
	f, err := ParseCapabilities(out.Bytes())
	if err != nil {
		return nil
	}
	return f
}

// Has tells whether the binary listed feature in --print-capabilities.
func (v Version) Has(feature string) bool { return slices.Contains(v.Features, feature) }

// AtLeast tells whether the version number is min or later, comparing
// dotted numbers ("1.13.2" >= "1.13"). An unknown number is not.
func (v Version) AtLeast(min string) bool {
	return v.Number != "" && compareVersions(v.Number, min) >= 0
}

func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x = leadingNumber(pa[i])
		}
		if i < len(pb) {
			y = leadingNumber(pb[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// leadingNumber reads "13" of "13", "13-rc1" or "13+ds".
func leadingNumber(s string) int {
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, _ := strconv.Atoi(s[:end])
	return n
}

// Requirement is what a config value needs of the Rust virtiofsd: a
// --print-capabilities feature where one shows it, else a minimum version
// (read from virtiofsd's history; docs/virtiofsd.md).
type Requirement struct {
	Key     string // the config key, for the error's line
	What    string // the value asked for, as the error shows it
	Version string // the first Rust virtiofsd that has it
	Feature string // the --print-capabilities feature that shows it, or ""
}

// Honoured tells whether binary v can do r: by its feature list when r has
// a feature and v answered --print-capabilities, else by its version.
func (v Version) Honoured(r Requirement) bool {
	if r.Feature != "" && v.Features != nil {
		return v.Has(r.Feature)
	}
	return v.AtLeast(r.Version)
}

// Requirements lists what o asks of the Rust virtiofsd beyond its oldest
// supported options.
func (o Options) Requirements() []Requirement {
	var rs []Requirement
	add := func(key, what, version, feature string) {
		rs = append(rs, Requirement{Key: key, What: what, Version: version, Feature: feature})
	}
	for _, m := range []struct{ key, value string }{
		{"MIGRATION_MODE", o.MigrationMode}, {"MIGRATION_ON_ERROR", o.MigrationOnError},
		{"MIGRATION_VERIFY_HANDLES", yes(o.MigrationVerifyHandles)}, {"MIGRATION_CONFIRM_PATHS", yes(o.MigrationConfirmPaths)},
	} {
		if m.value != "" {
			add(m.key, m.key+"="+m.value+" (live migration)", "1.11", FeatureMigratePrecopy)
		}
	}
	if o.MigrationMode == "file-handles" {
		add("MIGRATION_MODE", "MIGRATION_MODE=file-handles", "1.12", "")
	}
	if o.Readonly {
		add("READONLY", "READONLY=yes", "1.13", "")
	}
	if o.TranslateUID != nil {
		add("TRANSLATE_UID", "TRANSLATE_UID=", "1.13", "")
	}
	if o.TranslateGID != nil {
		add("TRANSLATE_GID", "TRANSLATE_GID=", "1.13", "")
	}
	if o.PosixACL == "auto" {
		add("POSIX_ACL", "POSIX_ACL=auto", "1.14", FeaturePosixACLNegotiation)
	}
	if o.SecurityLabel == "auto" {
		add("SECURITY_LABEL", "SECURITY_LABEL=auto", "1.14", FeatureSecLabelNegotiation)
	}
	return rs
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

// checkRequirements refuses the first value of o that binary v cannot
// honour, naming the version found and the version needed. An unknown
// version (tests, a flavor forced without detection) is not checked.
func checkRequirements(o Options) error {
	v := o.Version
	if v.Number == "" && v.Features == nil {
		return nil
	}
	for _, r := range o.Requirements() {
		if v.Honoured(r) {
			continue
		}
		how := ""
		if r.Feature != "" && v.Features != nil {
			how = fmt.Sprintf(" (it lists %s in --print-capabilities; this one lists %s)", r.Feature, listOrNone(v.Features))
		}
		return optionsErrorf(r.Key, "%s needs the Rust virtiofsd %s or later%s; found %s: upgrade virtiofsd or remove the line",
			r.What, r.Version, how, v)
	}
	return nil
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// AddedCapabilities returns the capabilities an argv asks virtiofsd to keep
// beyond its defaults (--modcaps=+x, -o modcaps=+x), as CAP_X: each must be
// in the unit's bounding set, or virtiofsd fails to start ("can't apply the
// child capabilities").
func AddedCapabilities(args []string) []string {
	var caps []string
	add := func(list string) {
		for _, c := range strings.Split(list, ":") {
			if name, ok := strings.CutPrefix(c, "+"); ok && name != "" {
				caps = append(caps, "CAP_"+strings.ToUpper(name))
			}
		}
	}
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		switch {
		case name == "--modcaps" && hasValue:
			add(value)
		case name == "--modcaps" && i+1 < len(args):
			i++
			add(args[i])
		case args[i] == "-o" && i+1 < len(args):
			i++
			for _, o := range strings.Split(args[i], ",") {
				if v, ok := strings.CutPrefix(o, "modcaps="); ok {
					add(v)
				}
			}
		case strings.HasPrefix(args[i], "-o") && strings.Contains(args[i], "modcaps="):
			for _, o := range strings.Split(strings.TrimPrefix(args[i], "-o"), ",") {
				if v, ok := strings.CutPrefix(o, "modcaps="); ok {
					add(v)
				}
			}
		}
	}
	return caps
}
