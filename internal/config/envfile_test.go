package config

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type asg = assignment

// envFileCases walk systemd's EnvironmentFile= syntax: each gives a file and
// the assignments systemd's parser makes of it.
var envFileCases = []struct {
	name string
	in   string
	want []assignment
}{
	{"empty file", "", nil},
	{"plain", "A=1\nB=two\n", []asg{{"A", "1", 1}, {"B", "two", 2}}},
	{"no final newline", "A=1", []asg{{"A", "1", 1}}},
	{"blank lines and comments", "\n# c\n; c\n   # indented\n\t\nA=1\n", []asg{{"A", "1", 6}}},
	{"blanks around key and value", "  A  =  1 2  \n", []asg{{"A", "1 2", 1}}},
	{"hash inside a value", "A=x # y\nB=x;y\n", []asg{{"A", "x # y", 1}, {"B", "x;y", 2}}},
	{"empty values", "A=\nB=  \nC=\"\"\nD=''", []asg{{"A", "", 1}, {"B", "", 2}, {"C", "", 3}, {"D", "", 4}}},
	{"equals in value", "A=b=c\n", []asg{{"A", "b=c", 1}}},
	{"CRLF line ends", "A=1\r\nB=2\r\n", []asg{{"A", "1", 1}, {"B", "2", 2}}},
	{"blank inside key kept", "A B=1\n", []asg{{"A B", "1", 1}}},

	{"single quotes are literal", `A='x \" \\ $y # z'`, []asg{{"A", `x \" \\ $y # z`, 1}}},
	{"single quotes span lines", "A='x\ny'\nB=1\n", []asg{{"A", "x\ny", 1}, {"B", "1", 3}}},
	{"single quotes keep blanks", "A='  x  '  \n", []asg{{"A", "  x  ", 1}}},
	{"double quotes unescape shell specials", `A="\" \\ \` + "`" + ` \$"`, []asg{{"A", "\" \\ ` $", 1}}},
	{"double quotes keep other backslashes", `A="a\nb\tc"`, []asg{{"A", `a\nb\tc`, 1}}},
	{"double quotes join escaped newlines", "A=\"x\\\ny\"\n", []asg{{"A", "xy", 1}}},
	{"double quotes span lines", "A=\"x\ny\"\n", []asg{{"A", "x\ny", 1}}},
	{"quoted pieces join", `A="x"'y'z`, []asg{{"A", "xyz", 1}}},
	{"blanks between quoted pieces dropped", `A="x" 'y'`, []asg{{"A", "xy", 1}}},
	{"unquoted backslash takes next char", `A=a\ b\#\\`, []asg{{"A", `a b#\`, 1}}},
	{"escaped trailing blank kept", "A=x\\ \n", []asg{{"A", "x ", 1}}},
	{"continuation", "A=foo \\\n  bar\nB=1\n", []asg{{"A", "foo   bar", 1}, {"B", "1", 3}}},
	{"continuation from start", "A=\\\nfoo\n", []asg{{"A", "foo", 1}}},
	{"backslash at end of file", "A=x\\", []asg{{"A", "x", 1}}},
	{"comment ending in escaped backslash", "# x \\\\\nA=1\n", []asg{{"A", "1", 2}}},
	{"comment continued into a blank line", "# x \\\n\nA=1\n", []asg{{"A", "1", 3}}},
	{"comment continued into a comment", "# x \\\n# y\nA=1\n", []asg{{"A", "1", 3}}},
	{"comment continued before CR LF", "# x \\\r\nA=1\n", []asg{{"A", "1", 2}}},
}

func TestEnvFileReadsWhatSystemdReads(t *testing.T) {
	for _, tt := range envFileCases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEnvFile([]byte(tt.in), "f.conf")
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestEnvFileRefusesWhatSystemdWouldDropOrMangle covers the syntax errors,
// each with the line where the problem starts.
func TestEnvFileRefusesWhatSystemdWouldDropOrMangle(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"no equals", "A=1\nCACHE auto\n", `f.conf:2: no "=" in "CACHE auto": write KEY=VALUE`},
		{"no equals at end of file", "A=1\n\nB", `f.conf:3: no "=" in "B": write KEY=VALUE`},
		{"equals first", "=1\n", `f.conf:1: line starts with "=": write KEY=VALUE`},
		{"unterminated single quote", "A=1\nB='x\n\nC=2\n", `f.conf:2: unterminated single quote: add the closing '`},
		{"unterminated double quote", "A=\"x\\\"\n", `f.conf:1: unterminated double quote: add the closing "`},
		{"NUL byte", "A=1\nB=\x00\n", "f.conf:2: NUL byte: this is not a text file"},
		{"invalid UTF-8", "A=1\n\nB=\xff\n", "f.conf:3: invalid UTF-8: save the file as UTF-8 text"},
		{"line after comment ending in backslash", "A=1\n# old \\\nB=2\n",
			"f.conf:3: this line follows a comment that ends in a backslash, which systemd before v254 reads as part of the comment: remove the backslash at the end of line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEnvFile([]byte(tt.in), "f.conf")
			require.Error(t, err, "got %q", got)
			assert.Equal(t, tt.want, err.Error())
			var ce *Error
			assert.True(t, errors.As(err, &ce))
		})
	}
}
