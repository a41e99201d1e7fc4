package pgxleak_test

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDocsCodeBlocksCompile extracts every ```go block of README.md and
// docs/*.md and type-checks them all with one `go vet`, in a temporary
// module of the workspace (go.work: the library, examples/ for sqlx, GORM,
// go-sqlmock and the OpenTelemetry SDK, and the blocks' module), so that
// pgxleak resolves to this checkout. A block that does not compile fails
// the test with its file and line: each block is preceded by a //line
// directive, so the compiler names the Markdown line itself.
//
// A block is one of three things, told apart by its text:
//   - a complete file: it starts with "package"; it is built as it is, in a
//     package of its own (a _test package is built too: go vet type-checks
//     test files);
//   - declarations (types, funcs, vars), after optional imports: they go in
//     one package per Markdown file, so that a later block of the same file
//     may use them;
//   - statements, after optional imports: they are wrapped in a function of
//     that package whose parameters give them ctx (context.Context), db
//     (*sql.DB), dsn (string), t (*testing.T) and mux (*http.ServeMux).
//
// Declarations and statements may use the packages in fragmentImports
// without importing them; a block that imports a package itself says so
// (as the quick start does). Shell and output blocks are not compiled.
func TestDocsCodeBlocksCompile(t *testing.T) {
	files, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	files = append([]string{"README.md"}, files...)

	root, err := filepath.Abs(".")
	require.NoError(t, err)
	tmp := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "go.work"), fmt.Appendf(nil,
		"go 1.25.0\n\nuse (\n\t./blocks\n\t%s\n\t%s\n)\n", root, filepath.Join(root, "examples")), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(tmp, "blocks"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "blocks", "go.mod"), []byte("module docblocks\n\ngo 1.25.0\n"), 0o644))

	n := 0
	for fi, file := range files {
		blocks := goBlocks(t, file)
		frag := filepath.Join(tmp, "blocks", fmt.Sprintf("f%d", fi))
		for bi, b := range blocks {
			n++
			pos := fmt.Sprintf("%s:%d", filepath.Join(root, file), b.line)
			if strings.HasPrefix(strings.TrimSpace(b.text), "package ") {
				dir := filepath.Join(tmp, "blocks", fmt.Sprintf("f%db%d", fi, bi))
				name := "main.go"
				if regexp.MustCompile(`(?m)^package \w+_test`).MatchString(b.text) {
					name = "block_test.go"
				}
				writeBlock(t, dir, name, "//line "+pos+"\n"+b.text)
				continue
			}
			writeBlock(t, frag, fmt.Sprintf("b%d.go", bi), fragment(pos, b.text, bi))
		}
	}
	t.Logf("%d Go blocks in %d files", n, len(files))
	require.NotZero(t, n)

	cmd := exec.Command("go", "vet", "./...")
	cmd.Dir = filepath.Join(tmp, "blocks")
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(tmp, "go.work"), "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "a code block of the docs does not compile (file:line are the Markdown's):\n%s",
		strings.ReplaceAll(string(out), root+string(filepath.Separator), ""))
}

// TestDocsFragment checks how fragment wraps a block: statements in a
// function, declarations as they are, each after a //line directive naming
// the Markdown line of its first line of code.
func TestDocsFragment(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
		dontWant   []string
	}{
		{name: "statements", text: "db.Close()\n",
			want: []string{"//line /r/README.md:10\ndb.Close()", "func _block3(", "return nil"}},
		{name: "statements ending in return", text: "return db.Close()\n",
			want: []string{"//line /r/README.md:10\nreturn db.Close()"}, dontWant: []string{"return nil"}},
		{name: "imports, then statements",
			text: "import (\n\t\"crypto/subtle\"\n)\n\n_ = subtle.ConstantTimeByteEq(1, 1)\n",
			want: []string{"//line /r/README.md:10\nimport (", "//line /r/README.md:14\n_ = subtle"}},
		{name: "declarations", text: "type x struct{}\n",
			want: []string{"//line /r/README.md:10\ntype x struct{}"}, dontWant: []string{"func _block"}},
		{name: "its own import of a package fragments get anyway", text: "import \"os\"\n\nvar _ = os.Args\n",
			dontWant: []string{"import \"os\"\nimport"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := fragment("/r/README.md:10", tc.text, 3)
			for _, w := range tc.want {
				assert.Contains(t, src, w)
			}
			for _, w := range tc.dontWant {
				assert.NotContains(t, src, w)
			}
			assert.Equal(t, 1, strings.Count(src, "\"os\"\n"), "os imported once")
		})
	}
}

// fragmentImports are the packages a fragment may use without importing
// them.
var fragmentImports = map[string]string{
	"context":                             "context.Background",
	"database/sql":                        "sql.Open",
	"database/sql/driver":                 "driver.IsValue",
	"errors":                              "errors.New",
	"fmt":                                 "fmt.Println",
	"log":                                 "log.Print",
	"log/slog":                            "slog.Default",
	"net/http":                            "http.NewServeMux",
	"os":                                  "os.Getenv",
	"testing":                             "testing.Short",
	"time":                                "time.Now",
	"github.com/jackc/pgx/v5":             "pgx.Connect",
	"github.com/jackc/pgx/v5/stdlib":      "stdlib.GetConnector",
	"github.com/pgxleak/pgxleak":          "pgxleak.Open",
	"github.com/pgxleak/pgxleak/livepage": "livepage.Handler",
	"github.com/jmoiron/sqlx":             "sqlx.NewDb",
	"gorm.io/gorm":                        "gorm.Open",
	"gorm.io/driver/postgres":             "postgres.New",
	"github.com/DATA-DOG/go-sqlmock":      "sqlmock.New",
}

// fragment makes a Go file of package "frag" from a block that is not a
// complete file: its own imports, then fragmentImports it did not import,
// then its declarations, or its statements in a function.
func fragment(pos, text string, i int) string {
	own, body, bodyLine := splitImports(text)
	imported := map[string]bool{}
	for _, m := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(own, -1) {
		imported[m[1]] = true
	}
	var b, uses strings.Builder
	b.WriteString("package frag\n\n")
	for _, path := range slices.Sorted(maps.Keys(fragmentImports)) {
		if !imported[path] {
			fmt.Fprintf(&b, "import %q\n", path)
			fmt.Fprintf(&uses, "\nvar _ = %s\n", fragmentImports[path])
		}
	}
	if own != "" {
		fmt.Fprintf(&b, "//line %s\n%s\n", pos, own)
	}
	file, line := pos[:strings.LastIndex(pos, ":")], lineOfPos(pos)+bodyLine
	if _, err := parser.ParseFile(token.NewFileSet(), "", "package p\n"+body, 0); err == nil {
		fmt.Fprintf(&b, "//line %s:%d\n%s\n", file, line, body) // declarations
		return b.String() + uses.String()
	}
	// Statements, in a block of their own, so that they may declare the
	// names the parameters give.
	ret := "\treturn nil\n"
	if lastIsReturn(body) {
		ret = ""
	}
	fmt.Fprintf(&b, "func _block%d(ctx context.Context, db *sql.DB, dsn string, t *testing.T, mux *http.ServeMux) error {\n\t{\n//line %s:%d\n%s\n\t}\n%s}\n",
		i, file, line, body, ret)
	return b.String() + uses.String()
}

// splitImports splits a block's leading import declarations from the rest,
// and says on which line of the block the rest starts.
func splitImports(text string) (imports, rest string, restLine int) {
	lines := strings.Split(text, "\n")
	i, open := 0, false
	for ; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case open:
			open = l != ")"
		case strings.HasPrefix(l, "import ("):
			open = true
		case strings.HasPrefix(l, "import "), l == "":
		default:
			return strings.Join(lines[:i], "\n"), strings.Join(lines[i:], "\n"), i
		}
	}
	return text, "", i
}

// lastIsReturn says whether the statements end with a return statement.
func lastIsReturn(body string) bool {
	f, err := parser.ParseFile(token.NewFileSet(), "", "package p\nfunc _() {\n"+body+"\n}\n", 0)
	if err != nil {
		return false // the compiler will say why
	}
	list := f.Decls[0].(*ast.FuncDecl).Body.List
	if len(list) == 0 {
		return false
	}
	_, ok := list[len(list)-1].(*ast.ReturnStmt)
	return ok
}

func lineOfPos(pos string) int {
	var n int
	fmt.Sscan(pos[strings.LastIndex(pos, ":")+1:], &n)
	return n
}

func writeBlock(t *testing.T, dir, name, src string) {
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644))
}

// codeBlock is a ```go block: its text, and the Markdown line of its
// first line of code.
type codeBlock struct {
	text string
	line int
}

// goBlocks returns the ```go blocks of a Markdown file, indented ones (in a
// list) included, their indentation removed.
func goBlocks(t *testing.T, file string) []codeBlock {
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	var blocks []codeBlock
	var cur *codeBlock
	indent := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		trimmed := strings.TrimLeft(l, " \t")
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```go"):
			indent = l[:len(l)-len(trimmed)]
			cur = &codeBlock{line: n + 1}
		case cur != nil && strings.HasPrefix(trimmed, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(l, indent) + "\n"
		}
	}
	require.NoError(t, sc.Err())
	require.Nil(t, cur, "%s: a ```go block is never closed", file)
	return blocks
}
