package pgxleak

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestLeakSitesBounded: pgxleak.connection.leaks keeps maxLeakSites sites
// of a pool apart, and counts the leaks at any further site under one
// overflow site.
func TestLeakSitesBounded(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	p := newTestTracker(t, []Option{WithMeterProvider(mp), WithLogger(nil)})

	const sites = maxLeakSites + 5
	for i := range sites {
		for range 2 { // the same site twice: one series
			p.tel.leak(Leak{Kind: LeakSuspected, Checkout: Checkout{Pool: "p",
				Culprit: Frame{Function: "app.f", File: "/app/f.go", Line: i + 1}}}, snapshot{})
		}
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var sum metricdata.Sum[int64]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "pgxleak.connection.leaks" {
				sum = m.Data.(metricdata.Sum[int64])
			}
		}
	}
	require.Len(t, sum.DataPoints, maxLeakSites+1)
	var total, other int64
	for _, dp := range sum.DataPoints {
		total += dp.Value
		if v, _ := dp.Attributes.Value("code.function.name"); v.AsString() == "(other)" {
			other = dp.Value
		} else {
			assert.Equal(t, int64(2), dp.Value, fmt.Sprint(dp.Attributes.ToSlice()))
		}
	}
	assert.Equal(t, int64(2*sites), total, "every leak is counted")
	assert.Equal(t, int64(2*(sites-maxLeakSites)), other)
}
