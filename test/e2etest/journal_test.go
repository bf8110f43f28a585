package e2etest

import (
	"context"
	"fmt"
	"strings"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// ReadyLine is what both flavors of virtiofsd print at the start of a
// session (readiness, which the shim turns into READY=1); the line at the
// VM's connection differs by flavor: shimbox.Platform.ConnectedLine.
const ReadyLine = "Waiting for vhost-user socket connection..."

// Entry is one journal entry of virtiofsd@<instance>.service.
type Entry struct {
	InvocationID string // _SYSTEMD_INVOCATION_ID (INVOCATION_ID on systemd's own lines): one per service run
	Identifier   string // SYSLOG_IDENTIFIER: "virtiofsd" for virtiofsd's own lines
	Instance     string // VIRTIOFSD_INSTANCE, on virtiofsd's lines
	PID          string // VIRTIOFSD_PID (a pid inside the box), on virtiofsd's lines
	Message      string
}

// Session is what the journal holds of one run of the service: one
// virtiofsd, one vhost-user client.
type Session struct {
	InvocationID string
	Entries      []Entry
}

// VirtiofsdPIDs lists the distinct VIRTIOFSD_PID values of the session's
// virtiofsd lines, in order of appearance.
func (s Session) VirtiofsdPIDs() []string {
	var pids []string
	seen := map[string]bool{}
	for _, e := range s.Entries {
		if e.PID != "" && !seen[e.PID] {
			seen[e.PID] = true
			pids = append(pids, e.PID)
		}
	}
	return pids
}

// HasVirtiofsdLine reports whether virtiofsd itself (SYSLOG_IDENTIFIER=
// virtiofsd) printed a line containing sub in this session.
func (s Session) HasVirtiofsdLine(sub string) bool { return s.hasLine("virtiofsd", sub) }

// HasShimLine reports whether the shim (SYSLOG_IDENTIFIER=virtiofsd-shim)
// logged a line containing sub in this session.
func (s Session) HasShimLine(sub string) bool { return s.hasLine("virtiofsd-shim", sub) }

func (s Session) hasLine(identifier, sub string) bool {
	for _, e := range s.Entries {
		if e.Identifier == identifier && strings.Contains(e.Message, sub) {
			return true
		}
	}
	return false
}

// String prints the session as journalctl's short output would, roughly.
func (s Session) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invocation %s:\n", s.InvocationID)
	for _, e := range s.Entries {
		pid := ""
		if e.PID != "" {
			pid = "[" + e.PID + "]"
		}
		fmt.Fprintf(&b, "  %s%s: %s\n", e.Identifier, pid, e.Message)
	}
	return b.String()
}

// Sessions reads the journal of virtiofsd@<instance>.service inside b
// (journalctl -u ... -o json, after journalctl --sync) and groups its
// entries by invocation id, oldest session first: _SYSTEMD_INVOCATION_ID on
// the lines of the shim and virtiofsd, INVOCATION_ID on systemd's own lines
// about the unit. Entries with neither are left out.
func Sessions(ctx context.Context, b *shimbox.Box, instance string) ([]Session, error) {
	entries, err := b.Journal(ctx, "-u", "virtiofsd@"+instance+".service")
	if err != nil {
		return nil, err
	}
	var sessions []Session
	index := map[string]int{}
	for _, j := range entries {
		e := Entry{
			InvocationID: j["_SYSTEMD_INVOCATION_ID"],
			Identifier:   j["SYSLOG_IDENTIFIER"],
			Instance:     j["VIRTIOFSD_INSTANCE"],
			PID:          j["VIRTIOFSD_PID"],
			Message:      j["MESSAGE"],
		}
		if e.InvocationID == "" {
			// systemd's own lines about the unit ("Started ...",
			// "Main process exited ...") name the run in INVOCATION_ID.
			e.InvocationID = j["INVOCATION_ID"]
		}
		if e.InvocationID == "" {
			continue
		}
		k, ok := index[e.InvocationID]
		if !ok {
			k = len(sessions)
			index[e.InvocationID] = k
			sessions = append(sessions, Session{InvocationID: e.InvocationID})
		}
		sessions[k].Entries = append(sessions[k].Entries, e)
	}
	return sessions, nil
}
