package pgxleak

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestIdentityFrom: the service and the instance come from the same
// variables the OpenTelemetry SDK reads, with the SDK's precedence, and
// fall back to the program, the host and the PID.
func TestIdentityFrom(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		program string
		host    string
		want    identity
		wantApp string // applicationName("primary")
	}{
		{"nothing set", nil, "/usr/local/bin/orders-api", "web-7f9c.eu-west-1.compute.internal",
			identity{"orders-api", "web-7f9c-4121"}, "orders-api/web-7f9c-4121/primary"},
		{"OTEL_SERVICE_NAME", map[string]string{"OTEL_SERVICE_NAME": "orders"}, "/bin/x", "h",
			identity{"orders", "h-4121"}, "orders/h-4121/primary"},
		{"resource attributes", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing, service.instance.id=pod%2F3,deployment.environment=prod"}, "/bin/x", "h",
			identity{"billing", "pod/3"}, "billing/pod/3/primary"},
		{"OTEL_SERVICE_NAME wins over service.name", map[string]string{"OTEL_SERVICE_NAME": "a", "OTEL_RESOURCE_ATTRIBUTES": "service.name=b"}, "/bin/x", "h",
			identity{"a", "h-4121"}, "a/h-4121/primary"},
		{"malformed pairs skipped", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "garbage,=x,service.instance.id=i1"}, "/bin/x", "",
			identity{"x", "i1"}, "x/i1/primary"},
		{"no host name", nil, "/bin/x", "", identity{"x", "host-4121"}, "x/host-4121/primary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := identityFrom(func(k string) string { return tc.env[k] }, tc.program, tc.host, 4121)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantApp, got.applicationName("primary"))
		})
	}
}

// TestApplicationNameFits: the name is at most 63 bytes, the same for the
// same inputs, cuts the longest part first, and keeps two long names that
// differ only at their ends apart.
func TestApplicationNameFits(t *testing.T) {
	long := strings.Repeat("k8s-pod-name-", 6)
	for _, tc := range []struct {
		name string
		id   identity
		pool string
		want string
	}{
		{"short", identity{"svc", "i"}, "p", "svc/i/p"},
		{"no pool", identity{"svc", "i"}, "", "svc/i"},
		{"exactly 63", identity{strings.Repeat("s", 59), "i"}, "p", strings.Repeat("s", 59) + "/i/p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.id.applicationName(tc.pool))
		})
	}

	a := identity{"orders-api", long + "a"}.applicationName("primary")
	b := identity{"orders-api", long + "b"}.applicationName("primary")
	assert.LessOrEqual(t, len(a), maxApplicationName)
	assert.LessOrEqual(t, len(b), maxApplicationName)
	assert.NotEqual(t, a, b, "names differing only at the end stay apart")
	assert.Equal(t, a, identity{"orders-api", long + "a"}.applicationName("primary"), "stable")
	assert.True(t, strings.HasPrefix(a, "orders-api/k8s-pod-name-"), a)
	assert.True(t, strings.HasSuffix(a, "/primary"), "the shorter parts are kept whole: %s", a)

	// Every part long: all are cut, and the result still fits.
	all := identity{strings.Repeat("s", 40), strings.Repeat("i", 40)}.applicationName(strings.Repeat("p", 40))
	assert.LessOrEqual(t, len(all), maxApplicationName)
	assert.Equal(t, 2, strings.Count(all, "/"), all)

	// Multi-byte characters are never split.
	u := identity{strings.Repeat("é", 40), "i"}.applicationName("p")
	assert.LessOrEqual(t, len(u), maxApplicationName)
	assert.True(t, strings.ToValidUTF8(u, "?") == u, u)
}
