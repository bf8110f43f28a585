package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MigrationKeys are the keys of live migration: set the same on every host,
// since virtiofsd ignores what does not apply to its role (source or
// destination).
var MigrationKeys = []string{"MIGRATION_MODE", "MIGRATION_ON_ERROR", "MIGRATION_VERIFY_HANDLES", "MIGRATION_CONFIRM_PATHS"}

// NeedsDACReadSearch tells whether the instance makes virtiofsd keep
// CAP_DAC_READ_SEARCH (open_by_handle_at(2)): file handles for inodes
// (INODE_FILE_HANDLES=prefer or mandatory), or for migration
// (MIGRATION_MODE=file-handles, which the destination needs). The key that
// asks for it is returned, or "".
func (c *Config) NeedsDACReadSearch() string {
	switch {
	case c.InodeFileHandles == "prefer" || c.InodeFileHandles == "mandatory":
		return "INODE_FILE_HANDLES"
	case c.MigrationMode == "file-handles":
		return "MIGRATION_MODE"
	}
	return ""
}

// setNegotiation takes virtiofsd's never|auto|always (1.14), or a boolean
// (yes is always, no is never), the only forms older versions know.
func setNegotiation(dst *string, v string) error {
	switch v {
	case "", "never", "auto", "always":
	case "yes", "true", "1":
		v = "always"
	case "no", "false", "0":
		v = "never"
	default:
		return errors.New("not allowed (allowed: never, auto, always, or a boolean: yes = always, no = never)")
	}
	*dst = v
	return nil
}

// translateTypes are the mapping types of virtiofsd's --translate-uid and
// --translate-gid (1.13 --help).
var translateTypes = []string{"guest", "host", "squash-guest", "squash-host", "forbid-guest", "map"}

// setTranslate takes one or more of virtiofsd's --translate-uid/--translate-gid
// values, separated by blanks: TYPE:NUMBER:NUMBER[:NUMBER], e.g.
// map:1000:100000:65536. virtiofsd checks the numbers' meaning.
func setTranslate(dst *[]string, v string) error {
	fields := strings.Fields(v)
	for _, f := range fields {
		typ, rest, _ := strings.Cut(f, ":")
		known := false
		for _, t := range translateTypes {
			known = known || t == typ
		}
		nums := strings.Split(rest, ":")
		ok := known && len(nums) >= 2 && len(nums) <= 3
		for _, n := range nums {
			if _, err := strconv.ParseUint(n, 10, 32); err != nil {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("%q is not a mapping TYPE:BASE:BASE:COUNT with TYPE one of %s (e.g. map:1000:100000:65536; several separated by blanks)",
				f, strings.Join(translateTypes, ", "))
		}
	}
	if len(fields) == 0 {
		fields = nil
	}
	*dst = fields
	return nil
}

// checkCombinations refuses what virtiofsd itself refuses at start, with
// the line of the key that makes the combination.
func (c *Config) checkCombinations() error {
	if c.MigrationMode == "file-handles" {
		for _, k := range []struct {
			name string
			b    *bool
		}{{"MIGRATION_VERIFY_HANDLES", c.MigrationVerifyHandles}, {"MIGRATION_CONFIRM_PATHS", c.MigrationConfirmPaths}} {
			if k.b != nil && *k.b {
				return &Error{File: c.Path, Line: c.Line(k.name), Key: k.name, Msg: fmt.Sprintf(
					"%s=yes is for MIGRATION_MODE=find-paths; file handles name the very same inodes already, "+
						"and virtiofsd refuses the two together: remove %s or set MIGRATION_MODE=find-paths", k.name, k.name)}
			}
		}
	}
	if c.PosixACL == "auto" || c.PosixACL == "always" {
		for _, k := range []struct {
			name string
			m    []string
		}{{"TRANSLATE_UID", c.TranslateUID}, {"TRANSLATE_GID", c.TranslateGID}} {
			if k.m != nil {
				return &Error{File: c.Path, Line: c.Line(k.name), Key: k.name, Msg: fmt.Sprintf(
					"%s= cannot be used with POSIX_ACL=%s (set at line %d): translating ids in virtiofsd would break POSIX ACLs, "+
						"and virtiofsd refuses the two together: remove one of them", k.name, c.PosixACL, c.Line("POSIX_ACL"))}
			}
		}
	}
	return nil
}
