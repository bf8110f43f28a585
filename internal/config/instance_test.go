package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidInstanceAcceptsSystemdInstanceStrings(t *testing.T) {
	for _, name := range []string{
		"vm1",
		"VM_1",
		"vm-1.data",
		"a:b",
		"srv-vm1",     // systemd-escape --path /srv/vm1
		`vm\x2dshare`, // systemd-escape vm-share
		"user@host",   // "@" is allowed in instances
		"a..b",        // dots inside are fine
		strings.Repeat("a", maxInstanceLen),
	} {
		assert.NoError(t, ValidInstance(name), name)
	}
}

func TestValidInstanceRefusesWhatSystemdOrTheFolderWouldNot(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"", "instance name is empty: give the part between @ and . in virtiofsd@NAME.service, e.g. vm1"},
		{"../etc/shadow", `instance name "../etc/shadow" contains '/', which systemd does not allow in a unit name: use letters, digits and ":-_.\@", or escape the name with systemd-escape (for a path: systemd-escape --path /srv/vm1)`},
		{"/srv/vm1", `contains '/'`},
		{"vm 1", `contains ' '`},
		{"vm1\n", `contains '\n'`},
		{"vm1\x00", `contains '\x00'`},
		{"vmé", `contains 'é'`},
		{"..", `instance name ".." starts with ".": start it with a letter or digit`},
		{".hidden", `starts with "."`},
		{strings.Repeat("a", maxInstanceLen+1), "instance name is 238 bytes long: systemd allows at most 237 here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidInstance(tt.name)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			var ce *Error
			assert.True(t, errors.As(err, &ce))
		})
	}
}
