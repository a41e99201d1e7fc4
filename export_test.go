package pgxleak

// Seams for the external tests (package pgxleak_test): internals they check
// directly, exported only to the tests.
var (
	CulpritIndex    = culpritIndex
	LibraryPrefixes = libraryPrefixes

	DefaultMaxOpenConns = defaultMaxOpenConns()
)
