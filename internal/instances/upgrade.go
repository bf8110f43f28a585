package instances

import (
	"fmt"
	"io"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// Upgrade is what a package upgrade changed.
type Upgrade string

// The upgrades.
const (
	// PackageUpgrade: this package; systemctl restart moves a session
	// onto a new shim and a new virtiofsd, the VM kept.
	PackageUpgrade Upgrade = "package"
	// VirtiofsdUpgrade: virtiofsd's binary (the dpkg trigger);
	// systemctl reload swaps virtiofsd under the VM.
	VirtiofsdUpgrade Upgrade = "virtiofsd"
)

// ParseUpgrade reads an Upgrade's name.
func ParseUpgrade(s string) (Upgrade, error) {
	switch u := Upgrade(s); u {
	case PackageUpgrade, VirtiofsdUpgrade:
		return u, nil
	}
	return "", fmt.Errorf("unknown upgrade %q: use %s or %s", s, PackageUpgrade, VirtiofsdUpgrade)
}

// Move is what an upgrade does with one instance whose service runs.
type Move struct {
	Instance string `json:"instance"`
	Unit     string `json:"unit"` // virtiofsd@NAME.service
	// Move: restart (or reload) it; its session moves, the VM kept.
	Move bool `json:"move"`
	// Reason says why it is left as it is, "" when it moves.
	Reason string `json:"reason"`
}

// UpgradePlan says, for each instance of list whose service runs, whether
// an upgrade moves its session: only where the running shim's state says
// it is movable (state.State.Movable) and the session is waiting or
// serving. Instances whose service does not run are not in it: their next
// session starts on the installed binaries anyway.
func UpgradePlan(list []Instance) []Move {
	var plan []Move
	for _, in := range list {
		s := in.Service
		if s == nil || s.MainPID == nil {
			continue
		}
		m := Move{Instance: in.Name, Unit: s.Unit.Unit}
		st := s.State
		switch {
		case s.ActiveState != "active":
			m.Reason = "its service is " + s.ActiveState
		case s.StateError != nil:
			m.Reason = "its state cannot be read: " + *s.StateError
		case !st.Live(*s.MainPID):
			m.Reason = "its shim has published no state, so whether a restart would keep its VM is unknown"
		case st.Phase != state.Waiting && st.Phase != state.Serving:
			m.Reason = "its session is " + string(st.Phase)
		case !st.Movable:
			m.Reason = st.UnmovableReason
			if m.Reason == "" {
				m.Reason = "its shim says its session cannot move"
			}
		default:
			m.Move = true
		}
		plan = append(plan, m)
	}
	return plan
}

// WritePlan writes the units to move to out, one a line (for a shell's
// for loop), and says to why which it leaves as they are, and why.
func WritePlan(out, why io.Writer, plan []Move, u Upgrade) error {
	keeps := "the previous shim and virtiofsd"
	if u == VirtiofsdUpgrade {
		keeps = "the virtiofsd it runs"
	}
	for _, m := range plan {
		if m.Move {
			if _, err := fmt.Fprintln(out, m.Unit); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(why, "virtiofsd-shim: %s is left as it is: %s; it keeps %s until its VM disconnects (docs/live-restart.md)\n",
			m.Unit, m.Reason, keeps)
	}
	return nil
}
