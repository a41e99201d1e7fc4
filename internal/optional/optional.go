// Package optional is the one list of the optional database/sql/driver
// interfaces a driver's Conn, Stmt or Rows may implement, with how
// pgxleak's wrappers treat each. The wrapper generator reads it, and the
// tests check the wrappers, and the list's completeness, against it.
package optional

//lint:file-ignore SA1019 the list names the deprecated interfaces database/sql still asserts

import (
	"database/sql/driver"
	"go/version"
	"reflect"
	"slices"
)

// Rule says how a wrapper treats one optional interface.
type Rule int

const (
	// Exact: database/sql behaves differently on the type assertion
	// alone, so a wrapper implements the interface if and only if the
	// wrapped value does. Each combination of Exact interfaces is its own
	// generated wrapper type.
	Exact Rule = iota
	// Always: database/sql documents what it does when the interface is
	// missing, and the wrapper does that itself when the wrapped value
	// lacks it, so the wrapper always implements it.
	Always
	// Folded: the wrapper never implements it. It implements Into
	// whenever the wrapped value has either, and falls back onto this
	// one exactly as database/sql would.
	Folded
)

func (r Rule) String() string {
	switch r {
	case Exact:
		return "exact"
	case Always:
		return "always"
	case Folded:
		return "folded"
	}
	return "unknown"
}

// Interface is one optional interface of one kind of driver value.
type Interface struct {
	Kind string // "conn", "stmt" or "rows"
	// Type is the interface database/sql asserts; nil when the toolchain
	// that built the program predates Since.
	Type reflect.Type
	// Since is the Go release that added the interface, as a build tag
	// ("go1.27"), when that is newer than Go 1.25, the oldest release
	// pgxleak supports; empty otherwise. The generator puts the wrappers
	// that implement it behind that build constraint.
	Since string
	// name is the interface's name, set with Since: Type cannot give it
	// on an older toolchain.
	name string
	Rule Rule
	Into reflect.Type // Folded only: the interface that carries it
	// Own is set for an Exact interface whose methods the adapter
	// intercepts: it has a method-set type named kind+Name (connBeginTx)
	// converted from the kind's base type. Otherwise the methods are
	// promoted straight from the wrapped value, embedded under a narrow
	// interface named after the interface (columnConverter).
	Own bool
	// Why is database/sql's reason for the rule, where it decides.
	Why string
}

// Name is the interface's name without its package: "Pinger".
func (i Interface) Name() string {
	if i.name != "" {
		return i.name
	}
	return i.Type.Name()
}

// In reports whether Go release goVersion ("go1.26") declares the
// interface.
func (i Interface) In(goVersion string) bool {
	return i.Since == "" || version.Compare(i.Since, goVersion) <= 0
}

// All lists every optional interface, by kind. The generator numbers the
// Exact ones of a kind in this order, one mask bit each.
var All = []Interface{
	{Kind: "conn", Type: reflect.TypeFor[driver.Pinger](), Rule: Always,
		Why: "without it (*DB).PingContext treats the connection as alive (pingDC); the wrapper returns nil"},
	{Kind: "conn", Type: reflect.TypeFor[driver.Execer](), Rule: Folded, Into: reflect.TypeFor[driver.ExecerContext](),
		Why: "database/sql calls Exec through ctxDriverExec: named values converted by namedValueToValue, then a ctx.Done check"},
	{Kind: "conn", Type: reflect.TypeFor[driver.ExecerContext](), Rule: Exact, Own: true,
		Why: "without Execer or ExecerContext database/sql prepares a statement instead (execDC)"},
	{Kind: "conn", Type: reflect.TypeFor[driver.Queryer](), Rule: Folded, Into: reflect.TypeFor[driver.QueryerContext](),
		Why: "database/sql calls Query through ctxDriverQuery: named values converted by namedValueToValue, then a ctx.Done check"},
	{Kind: "conn", Type: reflect.TypeFor[driver.QueryerContext](), Rule: Exact, Own: true,
		Why: "without Queryer or QueryerContext database/sql prepares a statement instead (queryDC)"},
	{Kind: "conn", Type: reflect.TypeFor[driver.ConnPrepareContext](), Rule: Always,
		Why: "without it database/sql calls Prepare, then closes the statement if ctx is done (ctxDriverPrepare)"},
	{Kind: "conn", Type: reflect.TypeFor[driver.ConnBeginTx](), Rule: Exact, Own: true,
		Why: "kept exact as issue 10 asks: without it database/sql rejects non-default TxOptions itself (ctxDriverBegin)"},
	{Kind: "conn", Type: reflect.TypeFor[driver.NamedValueChecker](), Rule: Always,
		Why: "driver.ErrSkip makes database/sql continue as if it were missing (driverArgsConnLocked)"},
	{Kind: "conn", Type: reflect.TypeFor[driver.SessionResetter](), Rule: Exact, Own: true,
		Why: "database/sql resets sessions only through it, and keeps a connection on a Tx's context rollback only with it and Validator (beginDC)"},
	{Kind: "conn", Type: reflect.TypeFor[driver.Validator](), Rule: Always,
		Why: "the one exception: IsValid is where pgxleak records a return; with SessionResetter it turns on keepConnOnRollback (beginDC)"},

	{Kind: "stmt", Type: reflect.TypeFor[driver.StmtExecContext](), Rule: Always,
		Why: "without it database/sql calls Exec after namedValueToValue and a ctx.Done check (ctxDriverStmtExec)"},
	{Kind: "stmt", Type: reflect.TypeFor[driver.StmtQueryContext](), Rule: Always,
		Why: "without it database/sql calls Query after namedValueToValue and a ctx.Done check (ctxDriverStmtQuery)"},
	{Kind: "stmt", Type: reflect.TypeFor[driver.NamedValueChecker](), Rule: Always,
		Why: "without it database/sql asks the conn's, which answers driver.ErrSkip when it has none (driverArgsConnLocked)"},
	{Kind: "stmt", Type: reflect.TypeFor[driver.ColumnConverter](), Rule: Exact,
		Why: "its presence changes the argument-checking route (driverArgsConnLocked, ccChecker)"},

	{Kind: "rows", Type: reflect.TypeFor[driver.RowsNextResultSet](), Rule: Exact,
		Why: "(*Rows).NextResultSet and Next branch on the assertion"},
	{Kind: "rows", Type: reflect.TypeFor[driver.RowsColumnTypeScanType](), Rule: Exact,
		Why: "(*Rows).ColumnTypes branches on the assertion (rowsColumnInfoSetupConnLocked)"},
	{Kind: "rows", Type: reflect.TypeFor[driver.RowsColumnTypeDatabaseTypeName](), Rule: Exact,
		Why: "(*Rows).ColumnTypes branches on the assertion (rowsColumnInfoSetupConnLocked)"},
	{Kind: "rows", Type: reflect.TypeFor[driver.RowsColumnTypeLength](), Rule: Exact,
		Why: "(*Rows).ColumnTypes branches on the assertion (rowsColumnInfoSetupConnLocked)"},
	{Kind: "rows", Type: reflect.TypeFor[driver.RowsColumnTypeNullable](), Rule: Exact,
		Why: "(*Rows).ColumnTypes branches on the assertion (rowsColumnInfoSetupConnLocked)"},
	{Kind: "rows", Type: reflect.TypeFor[driver.RowsColumnTypePrecisionScale](), Rule: Exact,
		Why: "(*Rows).ColumnTypes branches on the assertion (rowsColumnInfoSetupConnLocked)"},
	{Kind: "rows", Type: rowsColumnScanner, Since: "go1.27", name: "RowsColumnScanner", Rule: Exact,
		Why: "with it (*Rows).Next calls NextRow instead of Next, and Scan calls ScanColumn instead of its own conversion (nextLocked, scanLocked)"},
}

// Kinds are the kinds of driver value wrapped, in generation order.
var Kinds = []string{"conn", "stmt", "rows"}

// Of returns the interfaces of one kind that the running toolchain
// declares, in list order.
func Of(kind string) []Interface {
	var out []Interface
	for _, i := range All {
		if i.Kind == kind && i.Type != nil {
			out = append(out, i)
		}
	}
	return out
}

// ExactOf returns the Exact interfaces of one kind: bit n of the kind's
// mask stands for the n-th.
func ExactOf(kind string) []Interface {
	var out []Interface
	for _, i := range Of(kind) {
		if i.Rule == Exact {
			out = append(out, i)
		}
	}
	return out
}

// Releases returns the Go releases that added interfaces of one kind
// after Go 1.25 (their Since), oldest first.
func Releases(kind string) []string {
	var out []string
	for _, i := range All {
		if i.Kind == kind && i.Since != "" && !slices.Contains(out, i.Since) {
			out = append(out, i.Since)
		}
	}
	slices.SortFunc(out, version.Compare)
	return out
}

// InRelease returns the interfaces of one kind that Go release goVersion
// ("go1.26") declares, in list order, whatever the running toolchain: what
// a wrapper built by that release must mirror.
func InRelease(kind, goVersion string) []Interface {
	var out []Interface
	for _, i := range All {
		if i.Kind == kind && i.In(goVersion) {
			out = append(out, i)
		}
	}
	return out
}
