// Package depstest checks that every external program the product and its
// tests run comes with a fresh Debian 12 machine or with scripts/deps.sh:
// it lists them from the sources and maps each to its Debian package.
package depstest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Use is one place that runs an external program.
type Use struct {
	Program string // as written: a name looked up in PATH, or an absolute path
	Where   string // file:line, relative to the repository
}

// GoPrograms lists the programs Go files under root run by a literal name:
// exec.Command("name", ...), exec.CommandContext(ctx, "name", ...),
// exec.LookPath("name"), the same with a variable ranging over a literal
// []string{...}, and the test boxes' X.Run(ctx, "name", ...) and
// X.Command(ctx, "name", ...), which run a command inside a private systemd.
func GoPrograms(root string) ([]Use, error) {
	var uses []Use
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" && path != root) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		uses = append(uses, goFile(fset, rel, f)...)
		return nil
	})
	return uses, err
}

func goFile(fset *token.FileSet, rel string, f *ast.File) []Use {
	// Variables that range over a literal list of strings, and where.
	type ranged struct {
		name       string
		lits       []string
		start, end token.Pos
	}
	var ranges []ranged
	ast.Inspect(f, func(n ast.Node) bool {
		r, ok := n.(*ast.RangeStmt)
		if !ok {
			return true
		}
		v, ok := r.Value.(*ast.Ident)
		if !ok {
			return true
		}
		if lit, ok := r.X.(*ast.CompositeLit); ok {
			ranges = append(ranges, ranged{v.Name, stringLits(lit.Elts), r.Body.Pos(), r.Body.End()})
		}
		return true
	})
	var uses []Use
	add := func(pos token.Pos, e ast.Expr) {
		where := fmt.Sprintf("%s:%d", rel, fset.Position(pos).Line)
		if s, ok := stringLit(e); ok {
			uses = append(uses, Use{s, where})
			return
		}
		if id, ok := e.(*ast.Ident); ok {
			for _, r := range ranges {
				if r.name == id.Name && r.start <= id.Pos() && id.Pos() < r.end {
					for _, s := range r.lits {
						uses = append(uses, Use{s, where})
					}
				}
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "exec" {
			switch sel.Sel.Name {
			case "Command", "LookPath":
				if len(call.Args) > 0 {
					add(call.Pos(), call.Args[0])
				}
			case "CommandContext":
				if len(call.Args) > 1 {
					add(call.Pos(), call.Args[1])
				}
			}
			return true
		}
		// A box's Run(ctx, "name", ...) or Command(ctx, "name", ...).
		if (sel.Sel.Name == "Run" || sel.Sel.Name == "Command") && len(call.Args) > 1 && isContext(call.Args[0]) {
			if s, ok := stringLit(call.Args[1]); ok && programName.MatchString(s) {
				uses = append(uses, Use{s, fmt.Sprintf("%s:%d", rel, fset.Position(call.Pos()).Line)})
			}
		}
		return true
	})
	return uses
}

// isContext tells whether e reads as a context.Context argument: ctx,
// context.Background(), t.Context() and the like.
func isContext(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "ctx"
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok {
			return sel.Sel.Name == "Background" || sel.Sel.Name == "TODO" || sel.Sel.Name == "Context"
		}
	}
	return false
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func stringLits(es []ast.Expr) []string {
	var out []string
	for _, e := range es {
		if s, ok := stringLit(e); ok {
			out = append(out, s)
		}
	}
	return out
}

// programName is what a program's name looks like: a word, or an absolute
// path.
var programName = regexp.MustCompile(`^(/[A-Za-z0-9_.+/-]+|[A-Za-z0-9_][A-Za-z0-9_.+-]*)$`)

// shellBuiltins are the words of sh and bash that run no program.
var shellBuiltins = map[string]bool{
	"cd": true, "echo": true, "printf": true, "set": true, "export": true, "exit": true,
	"return": true, "read": true, "local": true, "shift": true, "trap": true, "test": true,
	"[": true, "true": true, "false": true, ":": true, ".": true, "source": true, "eval": true,
	"wait": true, "unset": true, "readonly": true, "type": true, "umask": true, "ulimit": true,
	"pwd": true, "break": true, "continue": true, "getopts": true, "alias": true, "let": true,
	"declare": true, "mapfile": true, "kill": true,
}

// shellKeywords are the words after which a command follows.
var shellKeywords = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true, "do": true, "done": true,
	"while": true, "until": true, "!": true, "{": true, "}": true, "esac": true, "time": true,
}

// ShellPrograms lists the programs a shell script runs (the first word of
// each command, and the X of `command -v X`, `exec X`, `env ... X`),
// leaving out builtins, the script's own functions, and the repository's
// own scripts (relative paths).
func ShellPrograms(rel, script string) []Use {
	funcs := map[string]bool{}
	for _, m := range shellFunc.FindAllStringSubmatch(script, -1) {
		funcs[m[1]] = true
	}
	sc := &shellScanner{src: stripHeredocs(script), line: 1}
	sc.commands(0)
	var uses []Use
	for _, w := range sc.words {
		if shellBuiltins[w.text] || funcs[w.text] || !programName.MatchString(w.text) ||
			(strings.Contains(w.text, "/") && !strings.HasPrefix(w.text, "/")) {
			continue
		}
		uses = append(uses, Use{w.text, fmt.Sprintf("%s:%d", rel, w.line)})
	}
	return uses
}

var shellFunc = regexp.MustCompile(`(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\)`)

// stripHeredocs blanks the bodies of here-documents (<<WORD, <<'WORD',
// <<-WORD), keeping the lines so that line numbers stay right.
func stripHeredocs(s string) string {
	lines := strings.Split(s, "\n")
	heredoc := regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?`)
	for i := 0; i < len(lines); i++ {
		m := heredoc.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != m[1]; i++ {
			lines[i] = ""
		}
		if i < len(lines) {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}

type shellWord struct {
	text string
	line int
}

// shellScanner finds the command words of a script: enough of sh's
// grammar for these scripts (quotes, $(...), `...`, ${...}, $((...)),
// comments, case patterns, for lists, redirections).
type shellScanner struct {
	src   string
	i     int
	line  int
	words []shellWord
}

// commands scans commands until the end, or until the ")" that closes a
// $( when nested.
func (sc *shellScanner) commands(depth int) {
	start := true // the next word is a command's first
	skipList := false
	var afterCommand string // "command", "exec", "env": the next plain word is the program
	for sc.i < len(sc.src) {
		c := sc.src[sc.i]
		switch {
		case c == '\n':
			sc.line++
			sc.i++
			start, skipList, afterCommand = true, false, ""
		case c == ' ' || c == '\t':
			sc.i++
		case c == '\\' && sc.i+1 < len(sc.src):
			if sc.src[sc.i+1] == '\n' {
				sc.line++
			}
			sc.i += 2
		case c == '#':
			for sc.i < len(sc.src) && sc.src[sc.i] != '\n' {
				sc.i++
			}
		case c == ';' || c == '&' || c == '|' || c == '(' || c == '{' || c == '`':
			sc.i++
			start, skipList, afterCommand = true, false, ""
		case c == ')':
			sc.i++
			if depth > 0 {
				return
			}
			start = true // after a case pattern
		case c == '<' || c == '>':
			// A redirection: the operator, then its target, which runs nothing.
			for sc.i < len(sc.src) && strings.IndexByte("<>&|-", sc.src[sc.i]) >= 0 {
				sc.i++
			}
			for sc.i < len(sc.src) && (sc.src[sc.i] == ' ' || sc.src[sc.i] == '\t') {
				sc.i++
			}
			if sc.i < len(sc.src) && strings.IndexByte("\n;&|()", sc.src[sc.i]) < 0 {
				sc.word(depth)
			}
		default:
			line := sc.line
			word, plain := sc.word(depth)
			if sc.i < len(sc.src) && (sc.src[sc.i] == '<' || sc.src[sc.i] == '>') && isDigits(word) {
				continue // the descriptor of a redirection: 2>/dev/null
			}
			if strings.HasSuffix(word, "=") && plain && sc.i < len(sc.src) && sc.src[sc.i] == '(' {
				sc.skipArray()
				continue // an array: name=(words)
			}
			switch {
			case skipList:
			case afterCommand != "":
				if strings.HasPrefix(word, "-") || strings.Contains(word, "=") && afterCommand == "env" {
					continue
				}
				if plain {
					sc.words = append(sc.words, shellWord{word, line})
				}
				afterCommand = ""
				start = false
			case !start:
			case strings.HasPrefix(word, ">") || strings.HasPrefix(word, "<") || strings.Contains(word, "=") && plain && !strings.HasPrefix(word, "="):
				// a redirection or an assignment before the command
			case word == "for" || word == "case":
				skipList = true // the list or the word until ; or newline; case patterns end with )
			case word == "command" || word == "exec" || word == "env":
				afterCommand = word
			case shellKeywords[word]:
				// a command follows
			default:
				if plain {
					sc.words = append(sc.words, shellWord{word, line})
				}
				start = false
			}
		}
	}
}

// word reads one word; plain is false when quotes or expansions are in it.
func (sc *shellScanner) word(depth int) (string, bool) {
	var b strings.Builder
	plain := true
	for sc.i < len(sc.src) {
		c := sc.src[sc.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == ';' || c == '&' || c == '|' || c == '`':
			return b.String(), plain
		case (c == '<' || c == '>') && (b.Len() == 0 || isDigits(b.String())):
			return b.String(), plain
		case c == '(' || c == ')':
			if c == ')' || b.Len() > 0 {
				return b.String(), plain // "name()" or the end of $( or a case pattern
			}
			return b.String(), plain
		case c == '\\' && sc.i+1 < len(sc.src):
			if sc.src[sc.i+1] == '\n' {
				sc.line++
			}
			b.WriteByte(sc.src[sc.i+1])
			sc.i += 2
			plain = false
		case c == '\'':
			plain = false
			sc.i++
			for sc.i < len(sc.src) && sc.src[sc.i] != '\'' {
				if sc.src[sc.i] == '\n' {
					sc.line++
				}
				sc.i++
			}
			sc.i++
		case c == '"':
			plain = false
			sc.i++
			sc.doubleQuoted(depth)
		case c == '$':
			plain = false
			sc.dollar(depth)
		default:
			b.WriteByte(c)
			sc.i++
		}
	}
	return b.String(), plain
}

// doubleQuoted skips a "..." string (the opening quote read), scanning the
// commands of the $(...) and `...` in it.
func (sc *shellScanner) doubleQuoted(depth int) {
	for sc.i < len(sc.src) {
		c := sc.src[sc.i]
		switch {
		case c == '"':
			sc.i++
			return
		case c == '\\':
			sc.i += 2
		case c == '$':
			sc.dollar(depth)
		case c == '`':
			sc.i++
			sc.backquoted()
		default:
			if c == '\n' {
				sc.line++
			}
			sc.i++
		}
	}
}

// dollar reads an expansion at a '$': $(...) and ${...} may run commands,
// $((...)) and $NAME do not.
func (sc *shellScanner) dollar(depth int) {
	sc.i++
	switch {
	case strings.HasPrefix(sc.src[sc.i:], "(("):
		for n := 0; sc.i < len(sc.src); sc.i++ {
			if sc.src[sc.i] == '(' {
				n++
			} else if sc.src[sc.i] == ')' {
				n--
				if n == 0 {
					sc.i++
					return
				}
			}
		}
	case strings.HasPrefix(sc.src[sc.i:], "("):
		sc.i++
		sc.commands(depth + 1)
	case strings.HasPrefix(sc.src[sc.i:], "{"):
		sc.i++
		for sc.i < len(sc.src) && sc.src[sc.i] != '}' {
			switch sc.src[sc.i] {
			case '$':
				sc.dollar(depth)
			case '"':
				sc.i++
				sc.doubleQuoted(depth)
			case '\'':
				for sc.i++; sc.i < len(sc.src) && sc.src[sc.i] != '\''; sc.i++ {
				}
				sc.i++
			default:
				sc.i++
			}
		}
		sc.i++
	default:
		for sc.i < len(sc.src) && (isNameByte(sc.src[sc.i]) || strings.IndexByte("?#@*!$-", sc.src[sc.i]) >= 0 && sc.src[sc.i-1] == '$') {
			sc.i++
		}
	}
}

// backquoted scans the commands of a `...` (the opening quote read).
func (sc *shellScanner) backquoted() {
	end := strings.IndexByte(sc.src[sc.i:], '`')
	if end < 0 {
		end = len(sc.src) - sc.i
	}
	inner := &shellScanner{src: sc.src[sc.i : sc.i+end], line: sc.line}
	inner.commands(0)
	sc.words = append(sc.words, inner.words...)
	sc.line = inner.line
	sc.i += end + 1
}

// skipArray skips the (words) of an array assignment, comments in it
// included.
func (sc *shellScanner) skipArray() {
	for sc.i < len(sc.src) && sc.src[sc.i] != ')' {
		switch sc.src[sc.i] {
		case '\n':
			sc.line++
		case '#':
			for sc.i < len(sc.src) && sc.src[sc.i] != '\n' {
				sc.i++
			}
			continue
		}
		sc.i++
	}
	sc.i++
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// MakefilePrograms lists the programs the Makefile's recipes and $(shell
// ...) calls run, with $(GO) as go and the Makefile's other variables as
// words that run nothing.
func MakefilePrograms(rel, makefile string) []Use {
	lines := strings.Split(makefile, "\n")
	var script strings.Builder
	shellCall := regexp.MustCompile(`\$\(shell ([^)]*)\)`)
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		text := ""
		switch {
		case strings.HasPrefix(l, "\t"):
			text = strings.TrimLeft(strings.TrimPrefix(l, "\t"), "@-+")
		default:
			for _, m := range shellCall.FindAllStringSubmatch(l, -1) {
				text += m[1] + "\n"
			}
		}
		text = strings.ReplaceAll(text, "$$", "\x00") // the shell's $, not make's
		text = strings.ReplaceAll(text, "$(GO)", "go")
		text = strings.ReplaceAll(text, "$(MAKE)", "make")
		text = makeVar.ReplaceAllString(text, "MAKEVAR")
		text = makeFunc.ReplaceAllString(text, "MAKEVAR")
		text = strings.ReplaceAll(text, "\x00", "$")
		// one script line per Makefile line, so that line numbers hold
		script.WriteString(strings.TrimRight(text, "\n") + "\n")
	}
	return ShellPrograms(rel, script.String())
}

var (
	makeVar  = regexp.MustCompile(`\$\([A-Z_]+\)`)
	makeFunc = regexp.MustCompile(`\$\([a-z]+ [^()]*\)`) // $(or A,B) and the like, once its variables are words
)

// Programs lists every use in the repository at root: Go files, scripts/*.sh,
// packaging/*.sh and the Makefile, sorted by program.
func Programs(root string) ([]Use, error) {
	uses, err := GoPrograms(root)
	if err != nil {
		return nil, err
	}
	scripts, _ := filepath.Glob(filepath.Join(root, "scripts", "*.sh"))
	more, _ := filepath.Glob(filepath.Join(root, "packaging", "*.sh"))
	for _, p := range append(scripts, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(root, p)
		uses = append(uses, ShellPrograms(rel, string(b))...)
	}
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		return nil, err
	}
	uses = append(uses, MakefilePrograms("Makefile", string(b))...)
	sort.SliceStable(uses, func(i, j int) bool { return uses[i].Program < uses[j].Program })
	return uses, nil
}
