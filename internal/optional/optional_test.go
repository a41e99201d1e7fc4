package optional

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// notOptional are the interfaces of database/sql/driver that are not an
// optional extension of a Conn, Stmt or Rows.
var notOptional = map[string]string{
	"Driver":         "what a driver is",
	"DriverContext":  "a Driver's extension, not a connection's",
	"Connector":      "wrapped as a whole",
	"Conn":           "the base interface",
	"Stmt":           "the base interface",
	"Rows":           "the base interface",
	"Tx":             "wrapped as a whole",
	"Result":         "returned unwrapped",
	"Valuer":         "implemented by argument values",
	"ValueConverter": "returned by ColumnConverter, unwrapped",
}

// TestListComplete checks the list against the database/sql/driver of
// the toolchain that runs the test: every interface it declares is
// classified here or in notOptional, so a new optional interface in a Go
// release fails this test until it is given a rule.
func TestListComplete(t *testing.T) {
	dir := filepath.Join(build.Default.GOROOT, "src", "database", "sql", "driver")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err, "reading the toolchain's database/sql/driver")
	listed := map[string]bool{}
	for _, i := range All {
		listed[i.Name()] = true
	}
	fset := token.NewFileSet()
	found := map[string]bool{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.TYPE {
				continue
			}
			for _, sp := range g.Specs {
				ts := sp.(*ast.TypeSpec)
				if _, ok := ts.Type.(*ast.InterfaceType); !ok || !ts.Name.IsExported() {
					continue
				}
				found[ts.Name.Name] = true
				assert.True(t, listed[ts.Name.Name] || notOptional[ts.Name.Name] != "",
					"driver.%s is neither in the list of optional interfaces nor known not to be one", ts.Name.Name)
			}
		}
	}
	for _, i := range All {
		assert.True(t, found[i.Name()], "driver.%s is listed but not declared by database/sql/driver", i.Name())
	}
	assert.GreaterOrEqual(t, len(found), len(notOptional)+len(listed), "is %s the right directory?", dir)
}

// TestListConsistent checks the rules fit together: every Folded
// interface folds into an Exact one of the same kind, only Exact ones are
// Own, and no interface is listed twice for one kind.
func TestListConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range All {
		key := i.Kind + "." + i.Name()
		assert.False(t, seen[key], "%s listed twice", key)
		seen[key] = true
		assert.NotEmpty(t, i.Why, "%s has no reason", key)
		assert.False(t, i.Own && i.Rule != Exact, "%s: Own is for Exact interfaces, rule is %s", key, i.Rule)
		assert.Equal(t, i.Rule == Folded, i.Into != nil, "%s: Into must be set exactly for Folded", key)
		if i.Rule == Folded {
			ok := false
			for _, j := range ExactOf(i.Kind) {
				ok = ok || j.Type == i.Into
			}
			assert.True(t, ok, "%s folds into %s, which is not an Exact %s interface", key, i.Into.Name(), i.Kind)
		}
	}
	for _, k := range Kinds {
		assert.NotEmpty(t, Of(k), "kind %s has no interfaces", k)
	}
}
