package config

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// assignment is one KEY=VALUE read from an environment file.
type assignment struct {
	key   string
	value string
	line  int // line on which the key starts, 1-based
}

// Character classes of systemd's src/basic/env-file.c (string-util.h,
// escape.h).
const (
	envComments         = "#;"
	envWhitespace       = " \t\n\r"
	envNewline          = "\n\r"
	envShellNeedsEscape = "\"\\`$"
)

// parseEnvFile splits data into assignments the way systemd's
// EnvironmentFile= reader (parse_env_file_internal) does, so a file means the
// same to the shim as to systemd. It is stricter in a few places where systemd
// silently drops or mangles text, and reports those as syntax errors instead:
// a line with no "=", a line starting with "=", an unterminated quote, a NUL
// byte, invalid UTF-8, and a line that follows a comment ending in a
// backslash (systemd before v254 treats that line as part of the comment, v254
// and later as an assignment).
//
// Errors are *Error values naming file and line.
func parseEnvFile(data []byte, file string) ([]assignment, error) {
	syntax := func(line int, format string, args ...any) error {
		return &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if err := checkText(data, file); err != nil {
		return nil, err
	}

	const (
		preKey = iota
		inKey
		preValue
		inValue
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
		comment
		commentEscape
	)

	var (
		out        []assignment
		key, value strings.Builder
		state      = preKey
		line       = 1
		keyLine    int  // line on which the current key started
		quoteLine  int  // line on which the open quote started
		keyWS      = -1 // start of trailing whitespace in key, -1 if none
		valueWS    = -1 // start of trailing whitespace in value, -1 if none
		afterCont  bool // on the line after a comment that ended in a backslash
	)

	push := func(trimValue bool) {
		k := key.String()
		if keyWS >= 0 {
			k = k[:keyWS]
		}
		v := value.String()
		if trimValue && valueWS >= 0 {
			v = v[:valueWS]
		}
		out = append(out, assignment{key: k, value: v, line: keyLine})
		key.Reset()
		value.Reset()
		keyWS, valueWS = -1, -1
	}

	for i := 0; i < len(data); i++ {
		c := data[i]
		isNewline := strings.IndexByte(envNewline, c) >= 0
		isSpace := strings.IndexByte(envWhitespace, c) >= 0

		switch state {
		case preKey:
			switch {
			case strings.IndexByte(envComments, c) >= 0:
				state = comment
				afterCont = false
			case isNewline:
				afterCont = false
			case c == '=':
				return nil, syntax(line, `line starts with "=": write KEY=VALUE`)
			case !isSpace:
				if afterCont {
					return nil, syntax(line, `this line follows a comment that ends in a backslash, `+
						`which systemd before v254 reads as part of the comment: `+
						`remove the backslash at the end of line %d`, line-1)
				}
				state = inKey
				keyLine = line
				keyWS = -1
				key.WriteByte(c)
			}
		case inKey:
			switch {
			case isNewline:
				return nil, syntax(keyLine, `no "=" in %q: write KEY=VALUE`, key.String())
			case c == '=':
				state = preValue
				valueWS = -1
			default:
				if !isSpace {
					keyWS = -1
				} else if keyWS < 0 {
					keyWS = key.Len()
				}
				key.WriteByte(c)
			}
		case preValue:
			switch {
			case isNewline:
				push(false)
				state = preKey
			case c == '\'':
				state = singleQuote
				quoteLine = line
			case c == '"':
				state = doubleQuote
				quoteLine = line
			case c == '\\':
				state = valueEscape
			case !isSpace:
				state = inValue
				value.WriteByte(c)
			}
		case inValue:
			switch {
			case isNewline:
				push(true)
				state = preKey
			case c == '\\':
				state = valueEscape
				valueWS = -1
			default:
				if !isSpace {
					valueWS = -1
				} else if valueWS < 0 {
					valueWS = value.Len()
				}
				value.WriteByte(c)
			}
		case valueEscape:
			state = inValue
			if !isNewline { // an escaped newline is a line continuation
				value.WriteByte(c)
			}
		case singleQuote:
			if c == '\'' {
				state = preValue
			} else {
				value.WriteByte(c)
			}
		case doubleQuote:
			switch c {
			case '"':
				state = preValue
			case '\\':
				state = doubleQuoteEscape
			default:
				value.WriteByte(c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			switch {
			case strings.IndexByte(envShellNeedsEscape, c) >= 0:
				value.WriteByte(c)
			case c != '\n': // like the shell, keep the backslash
				value.WriteByte('\\')
				value.WriteByte(c)
			}
		case comment:
			if c == '\\' {
				state = commentEscape
			} else if isNewline {
				state = preKey
			}
		case commentEscape:
			if isNewline {
				state = preKey
				afterCont = true
			} else {
				state = comment
			}
		}
		if c == '\n' {
			line++
		}
	}

	switch state {
	case inKey:
		return nil, syntax(keyLine, `no "=" in %q: write KEY=VALUE`, key.String())
	case singleQuote:
		return nil, syntax(quoteLine, `unterminated single quote: add the closing '`)
	case doubleQuote, doubleQuoteEscape:
		return nil, syntax(quoteLine, `unterminated double quote: add the closing "`)
	case preValue, valueEscape:
		push(false)
	case inValue:
		push(true)
	}
	return out, nil
}

// checkText refuses what is not UTF-8 text: systemd stops reading at a NUL
// byte and refuses invalid UTF-8.
func checkText(data []byte, file string) error {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return &Error{File: file, Line: line, Msg: "invalid UTF-8: save the file as UTF-8 text"}
		case r == 0:
			return &Error{File: file, Line: line, Msg: "NUL byte: this is not a text file"}
		case r == '\n':
			line++
		}
		i += size
	}
	return nil
}
