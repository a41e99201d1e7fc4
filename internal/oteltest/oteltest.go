// Package oteltest is the tests' in-memory OpenTelemetry SDK: a span
// recorder behind a tracer provider and a manual reader behind a meter
// provider.
//
// It exists so that the metric SDK's types stay out of the packages that use
// it. A function that names a type from which *sdkmetric.MeterProvider or
// *sdkmetric.ManualReader can be reached, even as a parameter, makes its
// package compile about 1,400 instantiations of the SDK's generic aggregation
// code (the compiler emits the instantiated types reachable from those
// structs, and their methods, in every package that needs them). In the root
// package's tests that cost was paid again at every edit of a root file; here
// it is paid once. So the meter provider is handed out as the API's
// metric.MeterProvider, SDK holds the reader and the provider only through
// func values, and the functions that touch them are kept out of line.
package oteltest

import (
	"context"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// SDK is an in-memory OpenTelemetry set-up: every ended span is kept by
// Spans, and every metric is read on demand by Collect.
type SDK struct {
	Spans *tracetest.SpanRecorder
	TP    *sdktrace.TracerProvider
	MP    metric.MeterProvider // an *sdkmetric.MeterProvider reading into collect

	collect    func(context.Context, *metricdata.ResourceMetrics) error // the manual reader's
	shutdownMP func(context.Context) error
}

// New returns a new SDK set-up. Shut it down with Shutdown.
//
//go:noinline
func New() *SDK {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	s := &SDK{Spans: tracetest.NewSpanRecorder(), MP: mp, collect: reader.Collect, shutdownMP: mp.Shutdown}
	s.TP = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.Spans))
	return s
}

// ResourceMetrics reads every metric, in the reader's order.
func (s *SDK) ResourceMetrics(ctx context.Context) (metricdata.ResourceMetrics, error) {
	var rm metricdata.ResourceMetrics
	err := s.collect(ctx, &rm)
	return rm, err
}

// Collect reads every metric, keyed by its name.
func (s *SDK) Collect(ctx context.Context) (map[string]metricdata.Metrics, error) {
	rm, err := s.ResourceMetrics(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out, nil
}

// Shutdown shuts both providers down.
func (s *SDK) Shutdown(ctx context.Context) {
	_ = s.TP.Shutdown(ctx)
	_ = s.shutdownMP(ctx)
}
