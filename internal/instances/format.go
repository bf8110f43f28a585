package instances

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// WriteJSON writes the list as a Document (see the package doc), indented.
func WriteJSON(w io.Writer, list []Instance) error {
	if list == nil {
		list = []Instance{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(Document{SchemaVersion: SchemaVersion, Instances: list})
}

// TableHeader is the first line of the table, with its columns.
var TableHeader = []string{"INSTANCE", "SOCKET", "SERVICE", "SINCE", "PID", "VIRTIOFSD", "CLIENT", "SHARED DIR", "STATUS"}

// TimeLayout is how the table shows times, in the local time zone.
const TimeLayout = "2006-01-02 15:04:05"

// Row returns the table cells of an instance, in TableHeader's order; "-"
// stands for nothing.
func Row(in Instance) []string {
	cells := []string{in.Name, "not loaded", "not loaded", "-", "-", "-", "-", "-", ""}
	if s := in.Socket; s != nil {
		cells[1] = s.ActiveState + "/" + s.SubState
	}
	if in.DeferredRestart != nil {
		cells[1] += " (restart deferred)"
	}
	if s := in.Service; s != nil {
		cells[2] = s.ActiveState + "/" + s.SubState
		if s.Since != nil {
			cells[3] = s.Since.Local().Format(TimeLayout)
		}
		cells[4] = pidCell(s.MainPID)
		cells[5] = pidCell(s.VirtiofsdPID)
		if s.Client != nil {
			cells[6] = *s.Client
			// With the front, the handovers of the session (reload).
			if st := s.State; st != nil && st.Front {
				cells[6] += fmt.Sprintf(" (front, %d handovers)", st.Handovers)
				if st.Degraded != nil {
					cells[6] += " degraded"
				}
			}
		}
	}
	switch c := in.Config; {
	case c.SharedDir != nil:
		cells[7] = *c.SharedDir
	case c.Exists:
		cells[7] = "?"
	}
	cells[8] = statusCell(in)
	return cells
}

// statusCell is the most useful of: the failure, a config problem, the
// shim's status text, a hint for a configured-only instance.
func statusCell(in Instance) string {
	var parts []string
	if in.Failure != "" {
		parts = append(parts, "failed: "+in.Failure)
	}
	if e := in.Config.Error; e != nil {
		first, _, _ := strings.Cut(*e, "\n")
		parts = append(parts, "config: "+first)
	}
	// systemd keeps the last STATUS= of a service that has ended: show it
	// only while the shim runs, so an idle instance does not read "Serving".
	if s := in.Service; s != nil && s.StatusText != "" && s.MainPID != nil && in.Failure == "" {
		parts = append(parts, s.StatusText)
	}
	if s := in.Service; s != nil && len(s.Older) > 0 {
		parts = append(parts, olderText(s.Older, s.State))
	}
	if in.DeferredRestart != nil && in.Failure == "" {
		parts = append(parts, "a restart of the socket waits: it listens again once the VM disconnects")
	}
	if in.Socket == nil && in.Service == nil {
		parts = append(parts, "configured only: systemctl enable --now virtiofsd@"+in.Name+".socket")
	}
	return strings.Join(parts, "; ")
}

// olderText says that the session runs older programs, and what moves it
// onto the installed ones.
func olderText(older []Older, st *state.State) string {
	var progs []string
	for _, o := range older {
		p := "runs an older " + o.Program
		if o.Version != "" {
			p += " " + o.Version
		}
		progs = append(progs, p+" ("+o.Reason+")")
	}
	next := "a restart moves its VM onto the installed binaries"
	if st == nil || !st.Movable {
		why := ""
		if st != nil && st.UnmovableReason != "" {
			why = ": " + st.UnmovableReason
		}
		next = "its next session gets the installed binaries (this one cannot move" + why + ")"
	}
	return strings.Join(progs, ", ") + "; " + next
}

func pidCell(p *int) string {
	if p == nil {
		return "-"
	}
	return strconv.Itoa(*p)
}

// cellSanitizer keeps a tab or newline in a path or text from breaking
// the table.
var cellSanitizer = strings.NewReplacer("\t", " ", "\n", " ")

// WriteTable writes the list as an aligned table with a header line.
func WriteTable(w io.Writer, list []Instance) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(TableHeader, "\t"))
	for _, in := range list {
		cells := Row(in)
		for i, c := range cells {
			cells[i] = cellSanitizer.Replace(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
