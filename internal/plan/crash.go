package plan

import (
	"fmt"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// The crash bound of a session with the front: at the CrashLimit-th
// virtiofsd crash within CrashWindow (a fresh virtiofsd that fails to
// start counts as one) the shim gives up instead of recovering.
const (
	CrashLimit  = 5
	CrashWindow = 60 * time.Second
)

// ThreadPool tells whether p's virtiofsd runs a thread pool
// (THREAD_POOL_SIZE > 0): it may complete requests out of order, so a
// crash under a VM is not recovered.
func ThreadPool(p *Plan) bool {
	n := p.Config.ThreadPoolSize
	return n != nil && *n > 0
}

// CrashRecovery tells whether a virtiofsd crash under a connected VM of
// p's instance is recovered on a fresh virtiofsd, and says what a crash
// means for the instance either way.
func CrashRecovery(p *Plan) (bool, string) {
	const hang = "the VM's connection ends with virtiofsd, and the guest's share hangs until the VM restarts"
	if ok, why := Front(p); !ok {
		return false, fmt.Sprintf("%s (the shim is not the VM's end of the socket: %s); a shim crash too: virtiofsd is stopped with it, and the service fails with exit status %d",
			hang, why, exitcode.ShimKilled)
	}
	if ThreadPool(p) {
		return false, fmt.Sprintf("%s (%s:%d: THREAD_POOL_SIZE=%d: virtiofsd may complete requests out of order, so its rings cannot be restarted safely)",
			hang, p.Config.Path, p.Config.Line("THREAD_POOL_SIZE"), *p.Config.ThreadPoolSize)
	}
	return true, fmt.Sprintf("a fresh virtiofsd serves the VM, degraded: the guest's requests fail with EBADF until it umounts and mounts the share "+
		"with nothing held open on it; at the %dth crash within %s the shim gives up (exit status %d) and the share hangs until the VM restarts; "+
		"a shim crash (kill -9) is recovered the same way: the restarted shim resumes the session from systemd's fd store on a fresh virtiofsd",
		CrashLimit, CrashWindow, exitcode.CrashLoop)
}
