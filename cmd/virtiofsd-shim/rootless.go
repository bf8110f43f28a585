package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
)

// logRootless says once per start, as information, what a virtiofsd without
// root cannot do, so that its effects in the guest (EPERM on mknod, files
// owned by the user) and virtiofsd's own warnings are not taken for faults.
func logRootless(log *logrus.Entry, p *plan) {
	maps := "your own uid and gid only, as root of its namespace (UID_MAP=/GID_MAP= unset)"
	if p.cfg.UIDMap != nil || p.cfg.GIDMap != nil {
		maps = "UID_MAP=" + idMapOrDefault(p.cfg.UIDMap) + " GID_MAP=" + idMapOrDefault(p.cfg.GIDMap)
	}
	log.WithFields(logrus.Fields{"uid": p.uid, "gid": p.gid, "id_maps": maps}).Info(
		"rootless: virtiofsd runs as your user in a user namespace, so the guest cannot create device nodes (no mknod), " +
			"see or set ids outside the mapped ones (" + maps + "), and files it creates belong to you on the host; " +
			"virtiofsd cannot use --inode-file-handles nor raise RLIMIT_NOFILE above the hard limit. " +
			"Its warnings about setting the uid/gid as root and the file limit are expected and logged as notices")
}

func idMapOrDefault(m *config.IDMap) string {
	if m == nil {
		return "(own id)"
	}
	return m.String()
}

// rootlessWarnings start the warnings a virtiofsd without root prints at
// every start (seen with the Rust virtiofsd 1.13.2 run as nobody): they say
// what logRootless already said, so they are not warnings here.
var rootlessWarnings = []string{
	"Couldn't set the process uid as root",
	"Couldn't set the process gid as root",
	"Failure when trying to set the limit to",
}

// rootlessSink lowers those warnings to notices; everything else passes as
// it is.
type rootlessSink struct{ logsink.Sink }

func (s rootlessSink) Write(r logsink.Record, fields map[string]string) error {
	if r.Priority == sdjournal.PriWarning {
		for _, w := range rootlessWarnings {
			if strings.HasPrefix(r.Message, w) {
				r.Priority = sdjournal.PriNotice
				break
			}
		}
	}
	return s.Sink.Write(r, fields)
}

// checkIDMapPrivileges refuses UID_MAP/GID_MAP under no_new_privs, which
// the user unit's sandbox sets: virtiofsd would run newuidmap/newgidmap,
// which are set-user-ID, and fail with "write to uid_map failed: Operation
// not permitted". status is the content of /proc/self/status.
func checkIDMapPrivileges(cfg *config.Config, status string) error {
	if cfg.UIDMap == nil && cfg.GIDMap == nil {
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NoNewPrivs:"); ok && strings.TrimSpace(v) == "1" {
			key := "UID_MAP"
			if cfg.UIDMap == nil {
				key = "GID_MAP"
			}
			return &config.Error{File: cfg.Path, Line: cfg.Line(key), Key: key, Msg: fmt.Sprintf(
				"%s= needs newuidmap/newgidmap, which are set-user-ID, but this service runs with no_new_privs "+
					"(NoNewPrivileges= and the sandbox of the user unit virtiofsd@.service): add the drop-in of the README's "+
					"\"Rootless\" section (systemctl --user edit virtiofsd@%s.service), or remove %s=", key, cfg.Instance, key)}
		}
	}
	return nil
}

// selfStatus reads /proc/self/status ("" when it cannot).
func selfStatus() string {
	b, _ := os.ReadFile("/proc/self/status")
	return string(b)
}
