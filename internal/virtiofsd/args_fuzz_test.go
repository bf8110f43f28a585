package virtiofsd

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzArgs checks Args's validation of extra arguments: it never panics,
// every refusal is an ErrOptions, and every accepted argv, read the way
// virtiofsd reads it (C: fuse_opt templates and comma-separated -o lists;
// Rust: clap's --name=value and --name value), keeps the contract with
// systemd and the shim:
//
//   - no --syslog, --daemonize, -d/--debug or -o debug;
//   - exactly one --fd, and it is our --fd=3;
//   - no --socket-path (nor its alias --socket, nor --socket-group);
//   - exactly one shared directory (--shared-dir or -o source=);
//   - the last log level given still shows the readiness line.
//
// The extra arguments come as one string split on NUL bytes.
func FuzzArgs(f *testing.F) {
	for _, seed := range []struct {
		rust  bool
		level string
		extra string
	}{
		{false, "", ""},
		{true, "", ""},
		{false, "debug", "-o\x00modcaps=-mknod"},
		{true, "", "--modcaps=-mknod\x00--posix-acl"},
		{false, "", "-o\x00log_level=debug"},
		{false, "", "-olog_level=warn"},
		{true, "", "--log-level\x00debug"},
		{true, "", "--log-level=error"},
		{true, "", "--log-level"},
		{false, "", "-o\x00flock,source=/other"},
		{false, "", "-osource=/other"},
		{true, "", "--shared-dir\x00/other"},
		{false, "", "--fd=4"},
		{true, "", "--fd\x004"},
		{false, "", "--socket-path=/run/x.sock"},
		{true, "", "--socket\x00/run/x.sock"},
		{false, "", "--syslog"},
		{true, "", "--daemonize"},
		{false, "", "-o\x00debug"},
		{false, "", "-d"},
		{false, "", "-o"},
		{false, "", "-o\x00xattr,debug"},
		{true, "", "-o\x00log_level=debug"},
		{false, "trace", ""},
		{true, "warn", "--log-level=info"},
		{false, "", "--thread-pool-size=0\x00-o\x00cache=none"},
		{false, "", "--\x00--syslog"},
		{true, "", "--print-capabilities"},
	} {
		f.Add(seed.rust, seed.level, seed.extra)
	}
	f.Fuzz(func(t *testing.T, rust bool, level, extra string) {
		flavor := C
		if rust {
			flavor = Rust
		}
		var extraArgs []string
		if extra != "" {
			extraArgs = strings.Split(extra, "\x00")
		}
		argv, err := Args(flavor, Options{SharedDir: "/srv/vm1", LogLevel: level, Extra: extraArgs})
		if err != nil {
			if !errors.Is(err, ErrOptions) {
				t.Fatalf("refusal %v is not an ErrOptions", err)
			}
			return
		}
		if problem := contractBreak(flavor, argv); problem != "" {
			t.Fatalf("accepted %s argv %q: %s", flavor, argv, problem)
		}
	})
}

// contractBreak reads argv as virtiofsd of flavor f would, conservatively,
// and says what in it breaks the contract, or "".
func contractBreak(f Flavor, argv []string) string {
	var (
		fds, dirs int
		level     = "info" // both flavors' default
	)
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		name, value, hasValue := strings.Cut(arg, "=")
		// value returns an option's value, joined or (clap) the next word.
		next := func() (string, bool) {
			if hasValue {
				return value, true
			}
			if f == Rust && i+1 < len(argv) {
				i++
				return argv[i], true
			}
			return "", false
		}
		switch {
		case name == "--syslog", name == "--daemonize", name == "-d", name == "--debug":
			return "has " + arg
		case name == "--socket-path", name == "--socket", name == "--socket-group":
			return "has " + arg
		case name == "--fd":
			fds++
			if v, ok := next(); !ok || v != "3" {
				return "has a --fd other than --fd=3: " + arg
			}
		case name == "--shared-dir":
			dirs++
			next()
		case name == "--log-level":
			if v, ok := next(); ok {
				level = v
			}
		case strings.HasPrefix(arg, "-o"):
			opts := strings.TrimPrefix(arg, "-o")
			if opts == "" && i+1 < len(argv) {
				i++
				opts = argv[i]
			}
			for _, o := range strings.Split(opts, ",") {
				oname, ovalue, _ := strings.Cut(o, "=")
				switch oname {
				case "debug":
					return "has -o debug"
				case "source":
					dirs++
				case "log_level", "loglevel":
					level = ovalue
				case "vhost_user_socket":
					return "has -o " + o + ", the C virtiofsd's --socket-path"
				}
			}
		}
	}
	switch {
	case fds != 1:
		return "has " + strconv.Itoa(fds) + " --fd options, want exactly --fd=3"
	case dirs != 1:
		return "has " + strconv.Itoa(dirs) + " shared directories, want exactly one"
	}
	shows := map[string]bool{"info": true, "debug": true}
	if f == Rust {
		shows["trace"] = true
	}
	if !shows[level] {
		return "log level " + level + " hides the readiness line"
	}
	return ""
}
