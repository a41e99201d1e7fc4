package pgxleak

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The design checks: DESIGN.md is the map, and these tests hold the code to
// it. They read the root package's non-test files with go/parser and
// go/types (imports are stubbed: only references between root files count),
// so they cost a few milliseconds and need no build.

const (
	maxBackUpPercent = 15 // of the references between root files
	maxExported      = 45 // root identifiers besides the option constructors
	maxOptions       = 25 // With… and Without… constructors
)

// TestDesignLayers fails when a file refers to a name defined in a file of a
// higher layer (DESIGN.md's layer table, top row highest), unless DESIGN.md
// names that reference as an exception, or when such references exceed
// maxBackUpPercent of all references between root files. Every root .go
// file must sit in the table.
func TestDesignLayers(t *testing.T) {
	layers, exceptions := readDesign(t, "DESIGN.md")
	refs := crossFileRefs(t, ".")
	files := rootFiles(t, ".")
	for _, f := range files {
		_, ok := layers[f]
		assert.True(t, ok, "DESIGN.md's layer table does not name %s", f)
	}
	back, used := 0, map[string]bool{}
	for _, r := range refs {
		lf, ld := layers[r.from], layers[r.def]
		if ld.rank >= lf.rank {
			continue
		}
		back++
		key := r.from + " " + r.name
		if exceptions[key] {
			used[key] = true
			continue
		}
		assert.Failf(t, "a reference runs back up the layers", "%s (%s) refers to %s in %s (%s), a higher layer; move it, or name the exception in DESIGN.md",
			r.from, lf.name, r.name, r.def, ld.name)
	}
	for key := range exceptions {
		assert.True(t, used[key], "DESIGN.md names the exception %q, which no longer runs back up", key)
	}
	pct := 0.0
	if len(refs) > 0 {
		pct = 100 * float64(back) / float64(len(refs))
	}
	t.Logf("%d of %d references between root files run back up the layers (%.0f%%)", back, len(refs), pct)
	assert.Less(t, pct, float64(maxBackUpPercent), "%.0f%% of the references run back up; the budget is under %d%%", pct, maxBackUpPercent)
}

// TestDesignAPISize counts the root package's exported identifiers: types,
// functions, methods on exported types, constants and variables, with the
// With…/Without… option constructors counted apart.
func TestDesignAPISize(t *testing.T) {
	api, options := exportedAPI(t, ".")
	t.Logf("%d exported identifiers besides %d options", len(api), len(options))
	assert.LessOrEqual(t, len(api), maxExported, "exported identifiers over the budget:\n%s", strings.Join(api, "\n"))
	assert.LessOrEqual(t, len(options), maxOptions, "options over the budget:\n%s", strings.Join(options, "\n"))
}

// layer is one row of DESIGN.md's layer table; rank 0 is the top.
type layer struct {
	name string
	rank int
}

var (
	tableRow  = regexp.MustCompile(`^\|\s*([a-z]+)\s*\|([^|]*)\|`)
	goFile    = regexp.MustCompile("`([a-z0-9_]+[.]go)`")
	exception = regexp.MustCompile("^- ([^→]+)→([^:]+):")
	backticks = regexp.MustCompile("`([^`]+)`")
)

// readDesign parses DESIGN.md: the layer table (rows "| name | `a.go`, `b.go`
// … |", top row highest) and the exceptions ("- `a.go`, `b.go` → `name`,
// `other`: why", every file with every name).
func readDesign(t *testing.T, path string) (map[string]layer, map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	layers, exceptions := map[string]layer{}, map[string]bool{}
	rank := 0
	for _, line := range strings.Split(string(b), "\n") {
		if m := tableRow.FindStringSubmatch(line); m != nil {
			fs := goFile.FindAllStringSubmatch(m[2], -1)
			if len(fs) == 0 {
				continue
			}
			for _, f := range fs {
				l, dup := layers[f[1]]
				assert.False(t, dup, "DESIGN.md puts %s in two layers (%s, %s)", f[1], l.name, m[1])
				layers[f[1]] = layer{m[1], rank}
			}
			rank++
		}
		if m := exception.FindStringSubmatch(line); m != nil {
			for _, f := range backticks.FindAllStringSubmatch(m[1], -1) {
				for _, n := range backticks.FindAllStringSubmatch(m[2], -1) {
					exceptions[f[1]+" "+n[1]] = true
				}
			}
		}
	}
	require.NotEmpty(t, layers, "%s has no layer table", path)
	return layers, exceptions
}

// rootFiles lists the package's non-test .go files.
func rootFiles(t *testing.T, dir string) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(t, err)
	var files []string
	for _, f := range all {
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, filepath.Base(f))
		}
	}
	sort.Strings(files)
	return files
}

// ref is one reference between root files: file from names name, which is
// defined in file def. A name counts once per file that uses it.
type ref struct{ from, def, name string }

// crossFileRefs type-checks the package's non-test files with every import
// stubbed, and returns each distinct (file, object) reference to an object
// declared at package level (or as a field or method of a package type) in
// another file (fields are not counted: they live with their type).
func crossFileRefs(t *testing.T, dir string) []ref {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range rootFiles(t, dir) {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		files = append(files, f)
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}, Selections: map[*ast.SelectorExpr]*types.Selection{}}
	conf := types.Config{Importer: stubImporter{}, Error: func(error) {}}
	pkg, _ := conf.Check("pgxleak", fset, files, info)
	seen := map[ref]bool{}
	var refs []ref
	add := func(at token.Pos, obj types.Object, name string) {
		if obj == nil || obj.Pkg() != pkg || !obj.Pos().IsValid() {
			return
		}
		from := filepath.Base(fset.Position(at).Filename)
		def := filepath.Base(fset.Position(obj.Pos()).Filename)
		if from == def || !topLevel(pkg, obj) {
			return
		}
		r := ref{from, def, name}
		if !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	for id, obj := range info.Uses {
		add(id.Pos(), obj, qualified(obj))
	}
	for sel, s := range info.Selections {
		add(sel.Sel.Pos(), s.Obj(), qualified(s.Obj()))
	}
	sort.Slice(refs, func(i, j int) bool {
		a, b := refs[i], refs[j]
		return a.from+a.name < b.from+b.name
	})
	return refs
}

// topLevel reports whether obj is declared at package level or is a method
// (which may live in another file than its type).
func topLevel(pkg *types.Package, obj types.Object) bool {
	if obj.Parent() == pkg.Scope() {
		return true
	}
	switch o := obj.(type) {
	case *types.Func:
		return o.Type().(*types.Signature).Recv() != nil
	}
	return false // fields live with their type; locals are no reference between files
}

// qualified names obj as the exceptions do: Type.member for fields and
// methods, the bare name otherwise.
func qualified(obj types.Object) string {
	var recv types.Type
	switch o := obj.(type) {
	case *types.Func:
		if r := o.Type().(*types.Signature).Recv(); r != nil {
			recv = r.Type()
		}
	}
	if recv != nil {
		if p, ok := recv.(*types.Pointer); ok {
			recv = p.Elem()
		}
		if n, ok := recv.(*types.Named); ok {
			return n.Obj().Name() + "." + obj.Name()
		}
	}
	return obj.Name()
}

// stubImporter gives every import as an empty, complete package: the design
// checks count references between root files only, so they need no build.
type stubImporter struct{}

func (stubImporter) Import(path string) (*types.Package, error) {
	p := types.NewPackage(path, filepath.Base(path))
	p.MarkComplete()
	return p, nil
}

// exportedAPI lists the root package's exported identifiers (types,
// functions, methods on exported types, constants, variables) and, apart,
// its option constructors (exported functions named With… or Without…).
func exportedAPI(t *testing.T, dir string) (api, options []string) {
	t.Helper()
	fset := token.NewFileSet()
	for _, name := range rootFiles(t, dir) {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				if d.Recv == nil {
					if strings.HasPrefix(d.Name.Name, "With") {
						options = append(options, d.Name.Name)
					} else {
						api = append(api, d.Name.Name)
					}
					continue
				}
				if recv := recvName(d.Recv.List[0].Type); ast.IsExported(recv) {
					api = append(api, recv+"."+d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							api = append(api, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								api = append(api, n.Name)
							}
						}
					}
				}
			}
		}
	}
	sort.Strings(api)
	sort.Strings(options)
	return api, options
}

// recvName is the receiver's type name, without pointer or type parameters.
func recvName(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.Name
		default:
			return fmt.Sprint(x)
		}
	}
}
