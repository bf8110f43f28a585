// Command mutate measures how much of a package's behaviour its own tests pin,
// by mutation: each mutant is one small change to one non-test file, judged
// by the package's `go test -short`. A mutant that does not compile is
// excluded from the score and counted apart (it proves nothing about the
// tests), unlike gremlins v0.6.0, which counts it as killed.
//
// Mutants: a flipped comparison (< <=, > >=, == !=), && for || and back, a
// negated if condition, a returned error made nil, and a dropped expression
// statement or assignment.
//
// Mutants are applied through go's -overlay flag: the real tree is never
// edited, so this is safe beside other work in the same checkout. Packages
// run one after another; mutants of one package run -parallel at a time.
//
//	go run ./test/mutate                         every default target
//	go run ./test/mutate -pkg exitcode           targets whose path contains "exitcode"
//	go run ./test/mutate -max 40 -pkg state      a sample of 40 mutants
//	go run ./test/mutate ./internal/plan         any package, all its files
//	go run ./test/mutate ./internal/virtiofsd:lines.go,args.go
//	go run ./test/mutate -list -pkg config       the mutants, not judged
//
// The report gives, per package, the mutants, killed, survived, not-compiling
// and the score (killed / compiling mutants), and lists every survivor as
// file:line and the mutation, so that an engineer can write the test it asks for.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultTargets are the packages whose scores docs/development.md records
// (issue 26, item 7). A target is a package directory, optionally followed by
// ":" and the comma-separated files to mutate.
func defaultTargets() []string {
	return []string{
		"./internal/exitcode",
		"./internal/config:envfile.go,config.go",
		"./internal/hooks",
		"./internal/state",
		"./internal/virtiofsd:lines.go,args.go",
	}
}

// options are the command line's settings.
type options struct {
	pkg      string
	max      int
	seed     uint64
	parallel int
	timeout  time.Duration
	verbose  bool
	list     bool
	write    string
}

func main() {
	var o options
	flag.StringVar(&o.pkg, "pkg", "", "run only targets whose package path contains this string")
	flag.IntVar(&o.max, "max", 0, "judge at most this many mutants per package, a random sample (0: all)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the -max sample")
	flag.IntVar(&o.parallel, "parallel", 2, "mutants judged at once")
	flag.DurationVar(&o.timeout, "timeout", 0, "time a mutant's tests may take before it counts as killed (0: five times the unmutated tests' time, plus 10s)")
	flag.BoolVar(&o.verbose, "v", false, "print each mutant's verdict as it comes")
	flag.BoolVar(&o.list, "list", false, "list the mutants without judging them")
	flag.StringVar(&o.write, "write", "", "write the scores table into this Markdown file's \"## Mutation scores\" section (a full run only: not with -pkg, -max or named packages)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mutate [flags] [PKGDIR[:FILE,...] ...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	// An interrupted run stops judging and still removes its temporary folder.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, flag.Args(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		stop()
		os.Exit(1)
	}
}

// mutant is one change to one file, as byte edits of its source.
type mutant struct {
	file  string // absolute path
	line  int
	desc  string
	edits []edit
}

// edit replaces src[start:end] with text.
type edit struct {
	start, end int
	text       string
}

// verdict is what a mutant's tests said.
type verdict int

const (
	killed verdict = iota
	survived
	notCompiling
)

// result is one package's tally.
type result struct {
	pkg                                   string
	mutants, killed, survived, notCompile int
	survivors                             []mutant
}

func (r result) score() float64 {
	judged := r.killed + r.survived
	if judged == 0 {
		return 100
	}
	return 100 * float64(r.killed) / float64(judged)
}

func run(ctx context.Context, o options, args []string, out io.Writer) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	targets := args
	if len(targets) == 0 {
		targets = defaultTargets()
	}
	tmp, err := os.MkdirTemp("", "mutate-")
	if err != nil {
		return fmt.Errorf("make the mutants' temporary folder: %w", err)
	}
	defer os.RemoveAll(tmp)

	var results []result
	for _, t := range targets {
		dir, files, _ := strings.Cut(t, ":")
		if o.pkg != "" && !strings.Contains(dir, o.pkg) {
			continue
		}
		r, err := mutatePackage(ctx, o, root, tmp, dir, files, out)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted during %s: %w", r.pkg, ctx.Err())
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		return fmt.Errorf("no target matches -pkg %q: name a package path or part of one", o.pkg)
	}
	if o.list {
		return nil
	}
	report(results, out)
	if o.write == "" {
		return nil
	}
	if o.pkg != "" || o.max > 0 || len(args) > 0 {
		fmt.Fprintf(out, "\n%s not written: a partial run (-pkg, -max or named packages) is no score of record\n", o.write)
		return nil
	}
	var table strings.Builder
	writeTable(results, &table)
	return writeSection(o.write, table.String())
}

// The scores go between these lines of the section; what is around them
// (notes on equivalent mutants, earlier scores) is the engineers' own.
const (
	sectionHeading = "## Mutation scores"
	tableBegin     = "<!-- make mutate writes from here -->"
	tableEnd       = "<!-- to here -->"
)

// writeSection puts table into path's "## Mutation scores" section, between
// tableBegin and tableEnd, adding the section or the markers where missing.
func writeSection(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s for its mutation scores: %w", path, err)
	}
	doc := string(b)
	block := tableBegin + "\n" + table + tableEnd + "\n"
	if i, j := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd); i >= 0 && j > i {
		doc = doc[:i] + block + strings.TrimPrefix(doc[j+len(tableEnd):], "\n")
	} else if h := strings.Index(doc, sectionHeading+"\n"); h >= 0 {
		// At the end of the section: before the next heading of its level.
		body := h + len(sectionHeading) + 1
		end := len(doc)
		if k := strings.Index(doc[body:], "\n## "); k >= 0 {
			end = body + k + 1
		}
		doc = strings.TrimRight(doc[:end], "\n") + "\n\n" + block + tail(doc[end:])
	} else {
		doc = strings.TrimRight(doc, "\n")
		if doc != "" {
			doc += "\n\n"
		}
		doc += sectionHeading + "\n\n" + block
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write the mutation scores into %s: %w", path, err)
	}
	return nil
}

// tail is what follows the section, set apart by a blank line.
func tail(rest string) string {
	if rest == "" {
		return ""
	}
	return "\n" + rest
}

// moduleRoot is the folder of the go.mod that the working directory is in.
func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module (go env GOMOD): %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run mutate from the repository")
	}
	return filepath.Dir(mod), nil
}

func mutatePackage(ctx context.Context, o options, root, tmp, dir, files string, out io.Writer) (result, error) {
	r := result{pkg: strings.TrimPrefix(dir, "./")}
	if files != "" {
		r.pkg += " (" + strings.ReplaceAll(strings.TrimSuffix(strings.ReplaceAll(files, ".go", ""), ","), ",", ", ") + ")"
	}
	pkgDir := filepath.Join(root, dir)
	names, err := sourceFiles(pkgDir, files)
	if err != nil {
		return r, err
	}
	var ms []mutant
	for _, n := range names {
		m, err := mutantsOf(filepath.Join(pkgDir, n))
		if err != nil {
			return r, err
		}
		ms = append(ms, m...)
	}
	if o.max > 0 && len(ms) > o.max {
		rng := rand.New(rand.NewPCG(o.seed, 0))
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		ms = ms[:o.max]
		sort.SliceStable(ms, func(i, j int) bool {
			if ms[i].file != ms[j].file {
				return ms[i].file < ms[j].file
			}
			return ms[i].line < ms[j].line
		})
	}
	fmt.Fprintf(out, "%s: %d mutants\n", r.pkg, len(ms))
	if o.list {
		for _, m := range ms {
			fmt.Fprintf(out, "  %s\n", m.where(root))
		}
		return r, nil
	}

	// The unmutated tests must pass, or every mutant would look killed.
	base := filepath.Join(tmp, "base")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return r, fmt.Errorf("make %s: %w", base, err)
	}
	baseOpts := o
	if baseOpts.timeout == 0 {
		baseOpts.timeout = 10 * time.Minute
	}
	v, msg, took := judge(ctx, baseOpts, root, pkgDir, base, nil)
	if v != survived {
		return r, fmt.Errorf("the tests of %s fail without any mutant; fix them first:\n%s", dir, msg)
	}
	if o.timeout == 0 {
		// A mutant that makes a test wait for its own deadline (a loop that
		// never sees its answer) is killed once it takes far longer than
		// the tests do.
		o.timeout = 5*took + 10*time.Second
	}

	verdicts := make([]verdict, len(ms))
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for w := 0; w < max(o.parallel, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(ms) || ctx.Err() != nil {
					return
				}
				work := filepath.Join(tmp, fmt.Sprintf("m%d", i))
				v, _, _ := judge(ctx, o, root, pkgDir, work, &ms[i])
				os.RemoveAll(work)
				verdicts[i] = v
				if o.verbose {
					mu.Lock()
					fmt.Fprintf(out, "  %s %s\n", [...]string{"killed  ", "SURVIVED", "no-build"}[v], ms[i].where(root))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()

	r.mutants = len(ms)
	for i, v := range verdicts {
		switch v {
		case killed:
			r.killed++
		case survived:
			r.survived++
			r.survivors = append(r.survivors, ms[i])
		case notCompiling:
			r.notCompile++
		}
	}
	for i := range r.survivors {
		r.survivors[i].file, _ = filepath.Rel(root, r.survivors[i].file)
	}
	return r, nil
}

func (m mutant) where(root string) string {
	rel, err := filepath.Rel(root, m.file)
	if err != nil {
		rel = m.file
	}
	return fmt.Sprintf("%s:%d: %s", rel, m.line, m.desc)
}

// sourceFiles lists the package's non-test Go files, or checks the named ones.
func sourceFiles(pkgDir, files string) ([]string, error) {
	if files != "" {
		names := strings.Split(files, ",")
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(pkgDir, n)); err != nil {
				return nil, fmt.Errorf("target file %s: %w", n, err)
			}
		}
		return names, nil
	}
	entries, err := os.ReadDir(pkgDir)
	if err != nil {
		return nil, fmt.Errorf("read package folder %s: %w", pkgDir, err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			names = append(names, n)
		}
	}
	return names, nil
}

// judge builds the package's test binary with the mutant overlaid and runs it
// in the package's folder, as go test would. m nil judges the package as it
// is. It returns the verdict, the output, and how long the tests ran.
func judge(ctx context.Context, o options, root, pkgDir, work string, m *mutant) (verdict, string, time.Duration) {
	if err := os.MkdirAll(work, 0o755); err != nil {
		return notCompiling, err.Error(), 0
	}
	bin := filepath.Join(work, "pkg.test")
	// -vet=off: a mutant is judged by the tests alone, not by go vet.
	build := []string{"test", "-c", "-vet=off", "-ldflags=-w", "-o", bin}
	if m != nil {
		src, err := os.ReadFile(m.file)
		if err != nil {
			return notCompiling, err.Error(), 0
		}
		mutated := filepath.Join(work, filepath.Base(m.file))
		if err := os.WriteFile(mutated, apply(src, m.edits), 0o644); err != nil {
			return notCompiling, err.Error(), 0
		}
		ov, _ := json.Marshal(map[string]map[string]string{"Replace": {m.file: mutated}})
		overlay := filepath.Join(work, "overlay.json")
		if err := os.WriteFile(overlay, ov, 0o644); err != nil {
			return notCompiling, err.Error(), 0
		}
		build = append(build, "-overlay", overlay)
	}
	build = append(build, pkgDir)
	cmd := exec.CommandContext(ctx, "go", build...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return notCompiling, string(b), 0
	}
	if _, err := os.Stat(bin); err != nil {
		// go test -c writes nothing for a package without tests.
		return survived, "no test binary: the package has no tests", 0
	}
	tctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	t := exec.CommandContext(tctx, bin, "-test.short", "-test.count=1", "-test.timeout="+o.timeout.String())
	t.Dir = pkgDir
	t.WaitDelay = 5 * time.Second
	start := time.Now()
	b, err := t.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return killed, string(b), took
	}
	return survived, string(b), took
}

// apply returns src with the edits made (edits in increasing order, not overlapping).
func apply(src []byte, edits []edit) []byte {
	var b strings.Builder
	last := 0
	for _, e := range edits {
		b.Write(src[last:e.start])
		b.WriteString(e.text)
		last = e.end
	}
	b.Write(src[last:])
	return []byte(b.String())
}

// flip is the comparison or logic operator that replaces op in a mutant.
func flip(op token.Token) (token.Token, bool) {
	to, ok := map[token.Token]token.Token{
		token.LSS: token.LEQ, token.LEQ: token.LSS,
		token.GTR: token.GEQ, token.GEQ: token.GTR,
		token.EQL: token.NEQ, token.NEQ: token.EQL,
		token.LAND: token.LOR, token.LOR: token.LAND,
	}[op]
	return to, ok
}

// mutantsOf lists every mutant of one file, in source order.
func mutantsOf(path string) ([]mutant, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	off := func(p token.Pos) int { return fset.Position(p).Offset }
	var ms []mutant
	add := func(at token.Pos, desc string, edits ...edit) {
		ms = append(ms, mutant{file: path, line: fset.Position(at).Line, desc: desc, edits: edits})
	}
	text := func(n ast.Node) string {
		s := string(src[off(n.Pos()):off(n.End())])
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i] + " ..."
		}
		return s
	}
	// errorResults is a stack: whether the innermost function returns an error last.
	var errorResults []bool
	var visit func(n ast.Node) bool
	visit = func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncDecl:
			if n.Body == nil {
				return false
			}
			errorResults = append(errorResults, returnsError(n.Type))
			ast.Inspect(n.Body, visit)
			errorResults = errorResults[:len(errorResults)-1]
			return false
		case *ast.FuncLit:
			errorResults = append(errorResults, returnsError(n.Type))
			ast.Inspect(n.Body, visit)
			errorResults = errorResults[:len(errorResults)-1]
			return false
		case *ast.BinaryExpr:
			if to, ok := flip(n.Op); ok {
				s := off(n.OpPos)
				add(n.OpPos, fmt.Sprintf("%s -> %s in %s", n.Op, to, text(n)),
					edit{s, s + len(n.Op.String()), to.String()})
			}
		case *ast.IfStmt:
			add(n.Cond.Pos(), "negated condition: if "+text(n.Cond),
				edit{off(n.Cond.Pos()), off(n.Cond.Pos()), "!("},
				edit{off(n.Cond.End()), off(n.Cond.End()), ")"})
		case *ast.ReturnStmt:
			if len(errorResults) > 0 && errorResults[len(errorResults)-1] && len(n.Results) > 0 {
				last := n.Results[len(n.Results)-1]
				if id, ok := last.(*ast.Ident); !ok || id.Name != "nil" {
					add(last.Pos(), "returned error made nil: "+text(last),
						edit{off(last.Pos()), off(last.End()), "nil"})
				}
			}
		case *ast.ExprStmt:
			add(n.Pos(), "dropped statement: "+text(n), edit{off(n.Pos()), off(n.End()), ""})
		case *ast.AssignStmt:
			// A dropped definition never compiles; it would only cost a build.
			if n.Tok != token.DEFINE {
				add(n.Pos(), "dropped assignment: "+text(n), edit{off(n.Pos()), off(n.End()), ""})
			}
		}
		return true
	}
	for _, d := range f.Decls {
		ast.Inspect(d, visit)
	}
	return ms, nil
}

// returnsError says whether a function's last result is of type error.
func returnsError(t *ast.FuncType) bool {
	if t.Results == nil || len(t.Results.List) == 0 {
		return false
	}
	id, ok := t.Results.List[len(t.Results.List)-1].Type.(*ast.Ident)
	return ok && id.Name == "error"
}

// report prints the table and the survivors.
func report(results []result, out io.Writer) {
	fmt.Fprintln(out)
	writeTable(results, out)
	for _, r := range results {
		if len(r.survivors) == 0 {
			continue
		}
		fmt.Fprintf(out, "\nsurvivors in %s:\n", r.pkg)
		for _, m := range r.survivors {
			fmt.Fprintf(out, "  %s:%d: %s\n", m.file, m.line, m.desc)
		}
	}
}

// writeTable writes the scores as a Markdown table. Its mutants column
// counts the mutants that compile: the ones the tests can judge.
func writeTable(results []result, out io.Writer) {
	fmt.Fprintln(out, "| package | mutants | killed | survived | not compiling | score |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Fprintf(out, "| `%s` | %d | %d | %d | %d | %.0f%% |\n",
			r.pkg, r.mutants-r.notCompile, r.killed, r.survived, r.notCompile, r.score())
	}
}
