package pgxleak

import (
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// The instance's identity: which service, which instance of it and which
// pool a session, a metric series and a log line belong to, the same in
// all three. pg_stat_activity shows it as application_name
// "service/instance/pool"; every pgxleak metric carries service.name and
// service.instance.id with the same values, next to
// db.client.connection.pool.name.

// maxApplicationName is the longest application_name the server keeps
// (NAMEDATALEN − 1); it truncates longer ones.
const maxApplicationName = 63

// identity is the process's service name and instance ID.
type identity struct {
	service  string // OTEL_SERVICE_NAME, service.name in OTEL_RESOURCE_ATTRIBUTES, or the program's name
	instance string // service.instance.id in OTEL_RESOURCE_ATTRIBUTES, or the host name and the PID
}

// processIdentity is the identity of this process, read once from its
// environment: the same variables the OpenTelemetry SDK's resource
// detector reads (resource.WithFromEnv), so that a service that sets them
// gets the same values on its own telemetry.
var processIdentity = sync.OnceValue(func() identity {
	host, _ := os.Hostname()
	return identityFrom(os.Getenv, os.Args[0], host, os.Getpid())
})

// identityFrom derives the identity from an environment, the program's
// path, the host name and the PID.
//
//   - service: OTEL_SERVICE_NAME, else service.name from
//     OTEL_RESOURCE_ATTRIBUTES (the SDK's precedence), else the program's
//     base name;
//   - instance: service.instance.id from OTEL_RESOURCE_ATTRIBUTES, else
//     the host name's first label and the PID ("web-7f9c-4121"), which
//     tells processes apart on one host and across hosts, and is stable
//     for the life of the process.
func identityFrom(getenv func(string) string, program, host string, pid int) identity {
	attrs := resourceAttributes(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	id := identity{service: strings.TrimSpace(getenv("OTEL_SERVICE_NAME"))}
	if id.service == "" {
		id.service = attrs["service.name"]
	}
	if id.service == "" {
		id.service = filepath.Base(program)
		if id.service == "" || id.service == "." || id.service == string(filepath.Separator) {
			id.service = "pgxleak"
		}
	}
	id.instance = attrs["service.instance.id"]
	if id.instance == "" {
		label, _, _ := strings.Cut(host, ".")
		if label == "" {
			label = "host"
		}
		id.instance = label + "-" + strconv.Itoa(pid)
	}
	return id
}

// resourceAttributes parses OTEL_RESOURCE_ATTRIBUTES: comma-separated
// key=value pairs, values percent-encoded. A malformed pair is skipped, as
// the SDK does.
func resourceAttributes(s string) map[string]string {
	m := make(map[string]string)
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		if u, err := url.PathUnescape(strings.TrimSpace(v)); err == nil {
			m[k] = u
		}
	}
	return m
}

// applicationName is "service/instance/pool", or "service/instance" for a
// pool without a name of its own, within 63 bytes: when it is longer, the
// longest part is cut and given a short hash of its whole value
// ("orders-api/ip-10-0-3-17-eu-we~3fa1/primary"), so that the same inputs
// always give the same name and two long names that differ only at the
// end stay different.
func (id identity) applicationName(pool string) string {
	parts := []string{id.service, id.instance}
	if pool != "" {
		parts = append(parts, pool)
	}
	return fitParts(parts, "/", maxApplicationName)
}

// fitParts joins parts with sep within limit bytes, shortening the longest
// part (see applicationName) until they fit. A part is never cut below its
// hash suffix and one character; if that is not enough, the result is cut
// at limit on a character boundary.
func fitParts(parts []string, sep string, limit int) string {
	const minPart = 6 // one character, "~" and four hex digits
	for {
		total := len(sep) * (len(parts) - 1)
		longest := 0
		for i, p := range parts {
			total += len(p)
			if len(p) > len(parts[longest]) {
				longest = i
			}
		}
		over := total - limit
		if over <= 0 {
			return strings.Join(parts, sep)
		}
		p := parts[longest]
		if len(p) <= minPart {
			return cutUTF8(strings.Join(parts, sep), limit)
		}
		keep := len(p) - over - 5 // room for "~" and the hash
		keep = min(max(keep, 1), len(p)-6)
		parts[longest] = cutUTF8(p, keep) + "~" + shortHash(p)
	}
}

// shortHash is four hex digits of FNV-1a of s.
func shortHash(s string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return fmt.Sprintf("%04x", h.Sum32()&0xffff)
}

// cutUTF8 cuts s to at most n bytes, on a character boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// defaultApplicationName is the application_name pgxleak gives a pool's
// sessions when the user set none: "service/instance/pool" (see
// applicationName), so that every service, instance and pool sharing a
// server is visible in pg_stat_activity. The default pool name
// ("host:port/database") would tell the server nothing it does not know,
// so a pool without WithPoolName is "service/instance".
func defaultApplicationName(poolName string) string {
	return processIdentity().applicationName(poolName)
}

// setApplicationName sets the default application_name on the parsed pgx
// configuration, unless the DSN or PGAPPNAME set one (pgx puts either in
// RuntimeParams): the user's own value wins.
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
