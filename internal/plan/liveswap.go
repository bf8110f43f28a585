package plan

import (
	"fmt"
	"strings"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// Front tells whether the shim stands between the VM and virtiofsd for p
// (FRONT=auto, the default, and a virtiofsd that can save its state: it
// lists migrate-precopy in --print-capabilities), and if not, why.
func Front(p *Plan) (bool, string) {
	switch {
	case p.Config != nil && p.Config.Front == "no":
		return false, "FRONT=no in " + p.Config.Path
	case p.Version.Flavor != virtiofsd.Rust:
		return false, fmt.Sprintf("a live swap needs the Rust virtiofsd; %s is the %s one", p.Binary, p.Version.Flavor)
	case p.Version.Features == nil:
		return false, fmt.Sprintf("%s did not answer --print-capabilities, so whether it can save its state is unknown", p.Binary)
	case !p.Version.Has(virtiofsd.FeatureMigratePrecopy):
		return false, fmt.Sprintf("%s does not list %s in --print-capabilities, so it cannot save its state", p.Binary, virtiofsd.FeatureMigratePrecopy)
	}
	return true, ""
}

// LiveSwap tells whether systemctl reload can swap virtiofsd under a
// running VM of p's instance, and if not, why: the front must run, and
// no thread pool (a swap is not known to be safe with one). What the VM
// negotiates (DEVICE_STATE, a packed ring) is only known per session.
func LiveSwap(p *Plan) (bool, string) {
	if ok, why := Front(p); !ok {
		return false, why
	}
	if ThreadPool(p) {
		return false, fmt.Sprintf("%s:%d: THREAD_POOL_SIZE=%d: a live swap is not known to be safe with a thread pool", p.Config.Path, p.Config.Line("THREAD_POOL_SIZE"), *p.Config.ThreadPoolSize)
	}
	return true, ""
}

// ForResume is p for the virtiofsd that resumes a session saved for a
// restart: it runs with --migration-on-error=guest-error whatever
// MIGRATION_ON_ERROR says, where the binary has live migration. A restart
// is one-way (the old virtiofsd is gone), so a file that cannot be
// carried, an open, deleted one, fails in the guest alone instead of
// failing the whole load and ending the session. Otherwise it returns p.
func ForResume(p *Plan) *Plan {
	if p.Version.Flavor != virtiofsd.Rust || !p.Version.Honoured(virtiofsd.Requirement{Version: "1.11", Feature: virtiofsd.FeatureMigratePrecopy}) {
		return p
	}
	const flag = "--migration-on-error="
	args := make([]string, 0, len(p.Args)+1)
	for _, a := range p.Args {
		if !strings.HasPrefix(a, flag) {
			args = append(args, a)
		}
	}
	r := *p
	r.Args = append(args, flag+"guest-error")
	return &r
}
