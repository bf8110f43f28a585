package config

import (
	"fmt"
	"strings"
)

// unitNameMax is systemd's UNIT_NAME_MAX minus the terminating NUL: the
// longest unit name, "virtiofsd@<instance>.service" included.
const unitNameMax = 255

// unitNameChars is the alphabet of systemd unit names (VALID_CHARS in
// src/basic/unit-name.c); an instance string may also contain "@".
const unitNameChars = "0123456789" +
	"abcdefghijklmnopqrstuvwxyz" +
	"ABCDEFGHIJKLMNOPQRSTUVWXYZ" +
	":-_.\\@"

// maxInstanceLen keeps "virtiofsd@<instance>.service" a valid unit name.
const maxInstanceLen = unitNameMax - len("virtiofsd@.service")

// ValidInstance reports whether name can be the instance of
// virtiofsd@<name>.service and name its configuration file. It accepts what
// systemd accepts as an instance string (unit_instance_is_valid: letters,
// digits and ":-_.\@", within the unit name length limit) except names
// starting with ".", which would be hidden files. A name is used as it
// appears in the unit name (systemd's %i), escapes included, so
// virtiofsd@srv-vm1.service reads srv-vm1.conf. None of the allowed
// characters is "/", so the file cannot lie outside the folder.
func ValidInstance(name string) error {
	refuse := func(format string, args ...any) error {
		return &Error{Msg: fmt.Sprintf(format, args...)}
	}
	if name == "" {
		return refuse("instance name is empty: give the part between @ and . in virtiofsd@NAME.service, e.g. vm1")
	}
	if len(name) > maxInstanceLen {
		return refuse("instance name is %d bytes long: systemd allows at most %d here", len(name), maxInstanceLen)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return !strings.ContainsRune(unitNameChars, r) }); i >= 0 {
		return refuse("instance name %q contains %q, which systemd does not allow in a unit name: "+
			"use letters, digits and \":-_.\\@\", or escape the name with systemd-escape (for a path: systemd-escape --path /srv/vm1)",
			name, []rune(name[i:])[0])
	}
	if strings.HasPrefix(name, ".") {
		return refuse("instance name %q starts with \".\": start it with a letter or digit", name)
	}
	return nil
}
