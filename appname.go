package pgxleak

import (
	"os"
	"path/filepath"
	"unicode/utf8"
)

// maxApplicationName is the longest application_name the server keeps
// (NAMEDATALEN − 1); it truncates longer ones.
const maxApplicationName = 63

// defaultApplicationName is the application_name pgxleak gives a pool's
// sessions when the user set none: the program's name, then "/" and the
// pool's name if WithPoolName gave one ("orders-api/primary"), so that
// every program and pool sharing a server is visible in pg_stat_activity.
// The default pool name ("host:port/database") would tell the server
// nothing it does not know, so it is left out.
func defaultApplicationName(poolName string) string {
	name := filepath.Base(os.Args[0])
	if name == "" || name == "." || name == string(filepath.Separator) {
		name = "pgxleak"
	}
	if poolName != "" {
		name += "/" + poolName
	}
	if len(name) > maxApplicationName {
		cut := maxApplicationName
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut]
	}
	return name
}

// setApplicationName sets the default application_name on the parsed pgx
// configuration, unless the DSN or PGAPPNAME set one (pgx puts either in
// RuntimeParams).
func (info dsnInfo) setApplicationName(poolName string) {
	if info.pgx == nil {
		return
	}
	if _, ok := info.pgx.RuntimeParams["application_name"]; ok {
		return
	}
	if info.pgx.RuntimeParams == nil {
		info.pgx.RuntimeParams = make(map[string]string)
	}
	info.pgx.RuntimeParams["application_name"] = defaultApplicationName(poolName)
}
