package service

import (
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
)

// logRootless says once per start, as information, what a virtiofsd without
// root cannot do, so that its effects in the guest (EPERM on mknod, files
// owned by the user) and virtiofsd's own warnings are not taken for faults.
func logRootless(log *logrus.Entry, p *plan.Plan) {
	maps := "your own uid and gid only, as root of its namespace (UID_MAP=/GID_MAP= unset)"
	if p.Config.UIDMap != nil || p.Config.GIDMap != nil {
		maps = "UID_MAP=" + plan.IDMapOrDefault(p.Config.UIDMap) + " GID_MAP=" + plan.IDMapOrDefault(p.Config.GIDMap)
	}
	log.WithFields(logrus.Fields{"uid": p.UID, "gid": p.GID, "id_maps": maps}).Info(
		"rootless: virtiofsd runs as your user in a user namespace, so the guest cannot create device nodes (no mknod), " +
			"see or set ids outside the mapped ones (" + maps + "), and files it creates belong to you on the host; " +
			"virtiofsd cannot use --inode-file-handles nor raise RLIMIT_NOFILE above the hard limit. " +
			"Its warnings about setting the uid/gid as root and the file limit are expected and logged as notices")
}

// rootlessWarnings start the warnings a virtiofsd without root prints at
// every start (seen with the Rust virtiofsd 1.13.2 run as nobody): they say
// what logRootless already said, so they are not warnings here.
var rootlessWarnings = []string{
	"Couldn't set the process uid as root",
	"Couldn't set the process gid as root",
	"Failure when trying to set the limit to",
}

// RootlessSink lowers those warnings to notices; everything else passes as
// it is.
type RootlessSink struct{ logsink.Sink }

func (s RootlessSink) Write(r logsink.Record, fields map[string]string) error {
	if r.Priority == journal.PriWarning {
		for _, w := range rootlessWarnings {
			if strings.HasPrefix(r.Message, w) {
				r.Priority = journal.PriNotice
				break
			}
		}
	}
	return s.Sink.Write(r, fields)
}
