package check

import (
	"fmt"
	"slices"
	"strings"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// migrationSummary shows the migration keys, and virtiofsd's defaults for
// those unset.
func migrationSummary(c *config.Config) string {
	or := func(v, def string) string {
		if v == "" {
			return def + " (default)"
		}
		return v
	}
	yn := func(b *bool) string {
		if b != nil && *b {
			return "yes"
		}
		return "no"
	}
	s := fmt.Sprintf("mode %s, on error %s", or(c.MigrationMode, "find-paths"), or(c.MigrationOnError, "abort"))
	if c.MigrationMode != "file-handles" {
		s += fmt.Sprintf(", verify handles %s, confirm paths %s", yn(c.MigrationVerifyHandles), yn(c.MigrationConfirmPaths))
	}
	if c.MigrationMode == "file-handles" {
		s += "; CAP_DAC_READ_SEARCH granted by the generator, --modcaps=+dac_read_search"
	}
	return s + "; set the same keys on every host"
}

func fileHandlesSummary(c *config.Config) string {
	switch c.InodeFileHandles {
	case "":
		return "never (the shim's default, passed explicitly: virtiofsd 1.13.3 and later default to prefer, which needs CAP_DAC_READ_SEARCH)"
	case "never":
		return "never"
	}
	return c.InodeFileHandles + " (CAP_DAC_READ_SEARCH granted by the generator)"
}

// optionKeys lists the other keys of virtiofsd's options that are set.
func optionKeys(c *config.Config) string {
	var l []string
	b := func(key string, v *bool) {
		if v != nil {
			l = append(l, fmt.Sprintf("%s=%s", key, map[bool]string{true: "yes", false: "no"}[*v]))
		}
	}
	str := func(key, v string) {
		if v != "" {
			l = append(l, key+"="+v)
		}
	}
	str("POSIX_ACL", c.PosixACL)
	str("SECURITY_LABEL", c.SecurityLabel)
	str("TRANSLATE_UID", strings.Join(c.TranslateUID, " "))
	str("TRANSLATE_GID", strings.Join(c.TranslateGID, " "))
	b("ALLOW_MMAP", c.AllowMmap)
	b("WRITEBACK", c.Writeback)
	b("READDIRPLUS", c.Readdirplus)
	b("PRESERVE_NOATIME", c.PreserveNoatime)
	return strings.Join(l, ", ")
}

// modcaps warns of each capability virtiofsd is told to keep
// (--modcaps=+X) that the service's bounding set lacks: virtiofsd would fail
// before it is ready ("can't apply the child capabilities"): a VM
// connected meanwhile loses its connection, or with the front off drives
// the socket into its start limit.
func (r *Report) modcaps(c *config.Config, args []string) {
	bound := generator.BoundingSet(c)
	for _, capName := range virtiofsd.AddedCapabilities(args) {
		if slices.Contains(bound, capName) {
			continue
		}
		r.warn(CodeModcapsUnbounded, fmt.Sprintf("EXTRA_ARGS asks virtiofsd to keep %s (--modcaps), which virtiofsd@%s.service's bounding set lacks "+
			"(%s:%d): virtiofsd will fail to start (\"can't apply the child capabilities\"); add it in a drop-in "+
			"(systemctl edit virtiofsd@%s.service: [Service] CapabilityBoundingSet=%s) or remove it",
			capName, c.Instance, c.Path, c.Line("EXTRA_ARGS"), c.Instance, capName),
			c.Path, c.Line("EXTRA_ARGS"), fmt.Sprintf("systemctl edit virtiofsd@%s.service: [Service] CapabilityBoundingSet=%s", c.Instance, capName))
	}
}

// threadPool warns of a thread pool for the C virtiofsd. Its pool is
// glib's, whose pool thread calls sched_getaffinity(2) when it spawns a
// worker (glib 2.74, Debian 12); the C virtiofsd's own seccomp allow-list
// lacks that call, so the kernel kills virtiofsd (SIGSYS) at the guest's
// first request, and its namespace parent exits with status 1 and no
// message (QEMU 7.2.22 here: the audit record names syscall 204). QEMU
// dropped the C virtiofsd after 7.2, so no fix is coming.
func (r *Report) threadPool(c *config.Config, v virtiofsd.Version) {
	if v.Flavor != virtiofsd.C || c.ThreadPoolSize == nil || *c.ThreadPoolSize == 0 {
		return
	}
	r.warn(CodeThreadPoolC, fmt.Sprintf("THREAD_POOL_SIZE=%d with the %s (%s:%d): its glib thread pool calls sched_getaffinity, which its own "+
		"seccomp filter does not allow; with glib 2.74 (Debian 12) the kernel kills it at the guest's first request, "+
		"and it exits with status 1 and no message (the kernel's audit log shows sig=31 syscall=204). "+
		"Remove THREAD_POOL_SIZE (no pool, the default) or install the Rust virtiofsd",
		*c.ThreadPoolSize, v, c.Path, c.Line("THREAD_POOL_SIZE")),
		c.Path, c.Line("THREAD_POOL_SIZE"), "remove THREAD_POOL_SIZE, or install the Rust virtiofsd")
}
