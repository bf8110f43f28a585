package logsink

import (
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"golang.org/x/sys/unix"
)

// journald's defaults (journald.conf(5)).
const (
	defaultRateLimitInterval = 30 * time.Second
	defaultRateLimitBurst    = 10000
)

// JournaldLimits returns the rate limit journald applies to one unit, read
// from journald.conf and its drop-ins under root ("/" on a host), with the
// burst scaled as journald scales it by the free space where the journal
// lives (burstModulate). journald scales by the space it may still use,
// never more than the free space, so this burst is at least journald's:
// the shim never holds back a line journald would keep. A rate limit turned
// off in journald.conf (an interval or burst of 0) is Interval 0.
func JournaldLimits(root string) Limits {
	interval, burst := defaultRateLimitInterval, defaultRateLimitBurst
	for _, p := range journaldConfFiles(root) {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		opts, err := unit.DeserializeOptions(f)
		f.Close()
		if err != nil {
			continue
		}
		for _, o := range opts {
			if o.Section != "Journal" {
				continue
			}
			switch o.Name {
			case "RateLimitIntervalSec", "RateLimitInterval":
				if d, ok := parseTimespan(o.Value); ok {
					interval = d
				}
			case "RateLimitBurst":
				if n, err := strconv.Atoi(strings.TrimSpace(o.Value)); err == nil && n >= 0 {
					burst = n
				}
			}
		}
	}
	if interval == 0 || burst == 0 {
		return Limits{}
	}
	free := uint64(0)
	for _, dir := range []string{"/var/log/journal", "/run/log/journal"} {
		var st unix.Statfs_t
		if unix.Statfs(filepath.Join(root, dir), &st) == nil {
			free = st.Bavail * uint64(st.Bsize)
			break
		}
	}
	return Limits{Interval: interval, Burst: burstModulate(burst, free)}
}

// journaldConfFiles lists journald.conf and then its drop-ins, in the order
// systemd applies them (drop-ins sorted by file name, /etc over /run over
// /usr/lib for the same name).
func journaldConfFiles(root string) []string {
	files := []string{filepath.Join(root, "/etc/systemd/journald.conf")}
	byName := map[string]string{}
	for _, dir := range []string{"/usr/lib/systemd/journald.conf.d", "/run/systemd/journald.conf.d", "/etc/systemd/journald.conf.d"} {
		matches, _ := filepath.Glob(filepath.Join(root, dir, "*.conf"))
		for _, m := range matches {
			byName[filepath.Base(m)] = m
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, byName[n])
	}
	return files
}

// burstModulate is journald's burst_modulate (journald-rate-limit.c): the
// burst grows with log2 of the available space, from 1 MiB on.
func burstModulate(burst int, available uint64) int {
	if available == 0 {
		return burst
	}
	k := bits.Len64(available) - 1
	if k <= 20 {
		return burst
	}
	return burst * (k - 16) / 4
}

// parseTimespan reads the systemd time spans journald.conf uses: "30s",
// "1min", "500ms", "1min 30s", a bare number of seconds.
func parseTimespan(s string) (time.Duration, bool) {
	units := []struct {
		suffix string
		d      time.Duration
	}{
		{"usec", time.Microsecond}, {"us", time.Microsecond}, {"msec", time.Millisecond}, {"ms", time.Millisecond},
		{"seconds", time.Second}, {"second", time.Second}, {"sec", time.Second}, {"s", time.Second},
		{"minutes", time.Minute}, {"minute", time.Minute}, {"min", time.Minute}, {"m", time.Minute},
		{"hours", time.Hour}, {"hour", time.Hour}, {"hr", time.Hour}, {"h", time.Hour},
	}
	var total time.Duration
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, false
	}
	for _, f := range fields {
		i := strings.IndexFunc(f, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		num, unitName := f, "s"
		if i >= 0 {
			num, unitName = f[:i], f[i:]
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, false
		}
		found := false
		for _, u := range units {
			if unitName == u.suffix {
				total += time.Duration(v * float64(u.d))
				found = true
				break
			}
		}
		if !found {
			return 0, false
		}
	}
	return total, true
}
