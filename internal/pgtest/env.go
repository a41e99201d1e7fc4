package pgtest

import "strings"

// WithoutEnv returns env, in os.Environ's form, without the variables
// named: a test that runs a program drops the ones that pick its server
// (DATABASE_URL and the like) before setting its own.
func WithoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			keep = keep && name != n
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
