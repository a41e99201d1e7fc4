package optional

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"go/version"
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

// release is the running toolchain's Go release as a build tag ("go1.26").
func release() string { return build.Default.ReleaseTags[len(build.Default.ReleaseTags)-1] }

// TestListComplete checks the list against the database/sql/driver of
// the toolchain that runs the test: every interface it declares is
// classified here or in notOptional, so a new optional interface in a Go
// release fails this test until it is given a rule; and an interface a
// later release added (Since) is declared if and only if this release has
// it, with a Type exactly then.
func TestListComplete(t *testing.T) {
	dir := filepath.Join(build.Default.GOROOT, "src", "database", "sql", "driver")
	entries, err := os.ReadDir(dir)
	if err != nil {
		require.FailNow(t, "inconsistent list", "reading the toolchain's database/sql/driver: %v", err)
	}
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
				if !listed[ts.Name.Name] && notOptional[ts.Name.Name] == "" {
					assert.Failf(t, "inconsistent list", "driver.%s is neither in the list of optional interfaces nor known not to be one", ts.Name.Name)
				}
			}
		}
	}
	declared := map[string]bool{}
	for _, i := range All {
		if i.In(release()) {
			declared[i.Name()] = true
		}
		switch {
		case found[i.Name()] && !i.In(release()):
			assert.Failf(t, "inconsistent list", "driver.%s is declared by %s, but listed as added in %s", i.Name(), release(), i.Since)
		case !found[i.Name()] && i.In(release()):
			assert.Failf(t, "inconsistent list", "driver.%s is listed but not declared by database/sql/driver", i.Name())
		case (i.Type != nil) != i.In(release()):
			assert.Failf(t, "inconsistent list", "driver.%s: Type is %v on %s, but the interface is listed as added in %s", i.Name(), i.Type, release(), i.Since)
		}
	}
	if len(found) < len(notOptional)+len(declared) {
		assert.Failf(t, "inconsistent list", "found %d interfaces, want at least %d: is %s the right directory?", len(found), len(notOptional)+len(declared), dir)
	}
}

// TestListConsistent checks the rules fit together: every Folded
// interface folds into an Exact one of the same kind, only Exact ones are
// Own, and no interface is listed twice for one kind. An interface a later
// Go release added names itself and its release, comes after the older
// ones of its kind (so the older ones keep their mask bits), and is
// mirrored, not folded: an older toolchain has nothing to fold it into.
func TestListConsistent(t *testing.T) {
	seen := map[string]bool{}
	newer := map[string]bool{}
	for _, i := range All {
		key := i.Kind + "." + i.Name()
		if seen[key] {
			assert.Failf(t, "inconsistent list", "%s listed twice", key)
		}
		seen[key] = true
		if (i.Since != "") != (i.name != "") {
			assert.Failf(t, "inconsistent list", "%s: name must be set exactly with Since", key)
		}
		if i.Since != "" {
			newer[i.Kind] = true
			if !version.IsValid(i.Since) || version.Compare(i.Since, "go1.25") <= 0 {
				assert.Failf(t, "inconsistent list", "%s: Since %q is not a Go release newer than go1.25", key, i.Since)
			}
			if i.Type != nil && i.Type.Name() != i.name {
				assert.Failf(t, "inconsistent list", "%s: name %q, but Type is %s", key, i.name, i.Type)
			}
			if i.Rule == Folded || i.Own {
				assert.Failf(t, "inconsistent list", "%s: an interface added after go1.25 must be Exact and not Own, or Always", key)
			}
		} else if newer[i.Kind] {
			assert.Failf(t, "inconsistent list", "%s is listed after an interface added by a later release", key)
		}
		if i.Why == "" {
			assert.Failf(t, "inconsistent list", "%s has no reason", key)
		}
		if i.Own && i.Rule != Exact {
			assert.Failf(t, "inconsistent list", "%s: Own is for Exact interfaces, rule is %s", key, i.Rule)
		}
		if (i.Into != nil) != (i.Rule == Folded) {
			assert.Failf(t, "inconsistent list", "%s: Into must be set exactly for Folded", key)
		}
		if i.Rule == Folded {
			ok := false
			for _, j := range ExactOf(i.Kind) {
				ok = ok || j.Type == i.Into
			}
			if !ok {
				assert.Failf(t, "inconsistent list", "%s folds into %s, which is not an Exact %s interface", key, i.Into.Name(), i.Kind)
			}
		}
	}
	for _, k := range Kinds {
		if len(Of(k)) == 0 {
			assert.Failf(t, "inconsistent list", "kind %s has no interfaces", k)
		}
	}
}
