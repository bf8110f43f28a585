package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

func init() { register(86, "syscalls", reportSyscalls) }

var (
	syscallsRounds = flag.Int("syscalls-rounds", 15, "runs per variant of the syscalls section (interleaved)")
	syscallsFiles  = flag.Int("syscalls-files", 2000, "files per run of the syscalls section")
)

// fsPhases are the helper fsops's phases: the system calls virtiofsd makes
// for a guest's create, lookup, open + read and unlink, on the host's file
// system, as both flavors make them (passthrough with O_PATH descriptors,
// files re-opened through /proc/self/fd).
var fsPhases = []struct{ key, what string }{
	{"create", "openat(O_CREAT|O_EXCL) + fstat + 4 KiB write + close"},
	{"lookup", "openat(O_PATH|O_NOFOLLOW) + fstatat(AT_EMPTY_PATH), the descriptor kept"},
	{"open", "openat(/proc/self/fd, N) + 4 KiB pread + close"},
	{"unlink", "close of the O_PATH descriptor + unlinkat"},
}

// fsopsResult is what one run of the helper measured: each phase's CPU
// time (getrusage, user + system, every thread) for all its files.
type fsopsResult struct {
	Files int                      `json:"files"`
	CPU   map[string]time.Duration `json:"cpu"`
}

// helperFSOps runs the phases on BENCH_FSOPS_FILES files in BENCH_FSOPS_DIR
// and writes an fsopsResult to BENCH_RESULT.
func helperFSOps() int {
	dir := os.Getenv("BENCH_FSOPS_DIR")
	n, _ := strconv.Atoi(os.Getenv("BENCH_FSOPS_FILES"))
	r, err := fsops(dir, n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsops:", err)
		return 1
	}
	b, _ := json.Marshal(r)
	p := os.Getenv(envResult)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		return 1
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return 1
	}
	return 0
}

func cpuNow() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fsops(dir string, n int) (fsopsResult, error) {
	r := fsopsResult{Files: n, CPU: map[string]time.Duration{}}
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return r, err
	}
	defer unix.Close(dirfd)
	procfd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return r, err
	}
	defer unix.Close(procfd)
	names := make([]string, n)
	for i := range names {
		names[i] = "f" + strconv.Itoa(i)
	}
	paths := make([]int, n)
	buf := make([]byte, 4096)
	var st unix.Stat_t
	phase := func(key string, op func(i int) error) error {
		start := cpuNow()
		for i := 0; i < n; i++ {
			if err := op(i); err != nil {
				return fmt.Errorf("%s %s: %w", key, names[i], err)
			}
		}
		r.CPU[key] = cpuNow() - start
		return nil
	}
	ops := map[string]func(i int) error{
		"create": func(i int) error {
			fd, err := unix.Openat(dirfd, names[i], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Fstat(fd, &st); err != nil {
				return err
			}
			_, err = unix.Write(fd, buf)
			return err
		},
		"lookup": func(i int) error {
			fd, err := unix.Openat(dirfd, names[i], unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			paths[i] = fd
			return unix.Fstatat(fd, "", &st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		},
		"open": func(i int) error {
			fd, err := unix.Openat(procfd, strconv.Itoa(paths[i]), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			_, err = unix.Pread(fd, buf, 0)
			return err
		},
		"unlink": func(i int) error {
			unix.Close(paths[i])
			return unix.Unlinkat(dirfd, names[i], 0)
		},
	}
	for _, p := range fsPhases {
		if err := phase(p.key, ops[p.key]); err != nil {
			return r, err
		}
	}
	return r, nil
}

// reportSyscalls measures what the shipped unit's sandbox lines cost the
// system calls virtiofsd makes for a guest, without a guest or virtiofsd:
// the data path's figures vary by tens of percent from run to run under
// TCG, far more than the 3% asked of them, and a line that cost anything
// per request would show here first. Each sandbox line alone, then all.
func reportSyscalls(t *testing.T, s *section) {
	s.title = "Sandbox lines per system call"
	ctx := context.Background()
	dir := benchDir(t)
	helper := helperCopy(t, dir)
	shipped, _, err := shippedSandbox()
	if err != nil {
		t.Fatal(err)
	}
	type variant struct{ key, name, lines string }
	variants := []variant{{"bare", "bare unit, no sandbox", ""}}
	var all []string
	for i, l := range shipped {
		if strings.HasPrefix(l, "ExecStopPost=") {
			continue
		}
		all = append(all, l)
		variants = append(variants, variant{fmt.Sprintf("line%02d", i), "bare + `" + l + "`", l + "\n"})
	}
	variants = append(variants, variant{"shipped", "bare + every sandbox line (the shipped unit's)", strings.Join(all, "\n") + "\n"})
	units := map[string]string{
		"fsops@.service": "[Unit]\nDescription=virtiofsd's system calls for %i (benchmark)\n\n[Service]\nType=oneshot\n" +
			"Environment=GOMAXPROCS=1 " + envHelper + "=fsops BENCH_FSOPS_DIR=" + dir + "/%i BENCH_FSOPS_FILES=" +
			strconv.Itoa(*syscallsFiles) + " " + envResult + "=" + dir + "/%i.json\nExecStart=" + helper + "\n",
	}
	for _, v := range variants {
		if err := os.Mkdir(filepath.Join(dir, v.key), 0o755); err != nil {
			t.Fatal(err)
		}
		if v.lines != "" {
			units["fsops@"+v.key+".service.d/sandbox.conf"] = "[Service]\n" + v.lines
		}
	}
	b := shimbox.New(t, shimbox.Options{Name: "bench-syscalls", ExtraUnits: units})
	runs := map[string][]fsopsResult{}
	for round := 0; round < *syscallsRounds; round++ {
		for k := range variants {
			v := variants[(round+k)%len(variants)]
			unit := "fsops@" + v.key + ".service"
			if out, err := b.Systemctl(ctx, "start", unit); err != nil {
				st, _ := b.Systemctl(ctx, "status", "--no-pager", "-n", "20", unit)
				t.Fatalf("%s: %v %s\n%s", unit, err, out, st)
			}
			res := filepath.Join(dir, v.key+".json")
			raw, err := os.ReadFile(res)
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(res)
			var r fsopsResult
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			runs[v.key] = append(runs[v.key], r)
		}
	}

	s.printf("The system calls virtiofsd makes on the host for a guest's create, lookup, open + read and unlink, made by\n"+
		"a program of their own (this test binary's helper `fsops`, GOMAXPROCS=1) in a oneshot unit of one private\n"+
		"systemd (Debian 12 leg, systemd 252), %d files per run; no guest and no virtiofsd, so that what a sandbox\n"+
		"line costs each system call is not lost in the guest's noise. Phases:\n\n", *syscallsFiles)
	for _, p := range fsPhases {
		s.printf("- %s: %s\n", p.key, p.what)
	}
	s.printf("\nCPU time per file (getrusage, user + system) of each phase, median of %d runs per variant, the variants\n"+
		"interleaved, order rotated each round; in brackets the median over the rounds of the run's ratio to the bare\n"+
		"unit's run of the same round; last column, the same for all four phases together, with its range:\n\n| variant |",
		*syscallsRounds)
	for _, p := range fsPhases {
		s.printf(" %s |", p.key)
	}
	s.printf(" all phases, paired (lowest to highest) |\n|---|%s---|\n", strings.Repeat("---|", len(fsPhases)))
	total := func(r fsopsResult) time.Duration {
		var d time.Duration
		for _, p := range fsPhases {
			d += r.CPU[p.key]
		}
		return d
	}
	paired := func(key string, f func(fsopsResult) time.Duration) []float64 {
		var x []float64
		for i, r := range runs[key] {
			if bare := f(runs["bare"][i]); bare > 0 {
				x = append(x, float64(f(r))/float64(bare))
			}
		}
		sort.Float64s(x)
		return x
	}
	for _, v := range variants {
		s.printf("| %s |", v.name)
		for _, p := range fsPhases {
			var x Sample
			for _, r := range runs[v.key] {
				x = append(x, r.CPU[p.key]/time.Duration(r.Files))
			}
			s.printf(" %.2f µs", float64(x.Median())/1e3)
			if v.key != "bare" {
				s.printf(" (%.2f)", medianOf(paired(v.key, func(r fsopsResult) time.Duration { return r.CPU[p.key] })))
			}
			s.printf(" |")
		}
		if v.key == "bare" {
			s.printf(" 1.00 |\n")
			continue
		}
		x := paired(v.key, total)
		s.printf(" %.3f (%.3f to %.3f) |\n", medianOf(x), x[0], x[len(x)-1])
	}
	s.printf("\nMeasured by `TestReport/syscalls` (test/bench/syscalls_test.go). Alone:\n"+
		"`go test -run '^TestReport$/^syscalls$' -timeout 30m ./test/bench/ -args -report /tmp/syscalls.md -syscalls-rounds %d -syscalls-files %d`\n",
		*syscallsRounds, *syscallsFiles)
}

// medianOf is the median of sorted x.
func medianOf(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	if len(x)%2 == 0 {
		return (x[len(x)/2-1] + x[len(x)/2]) / 2
	}
	return x[len(x)/2]
}
