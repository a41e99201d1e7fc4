package livepage

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The page's plots: the pool's recent history (history.go) drawn as SVG
// line charts, with their scales and ticks.

// Plot geometry, in SVG user units; the page scales it to its width.
const (
	plotW, plotH           = 560, 170
	plotLeft, plotRight    = 52, 10
	plotTop, plotBottom    = 10, 24
	plotInnerW, plotInnerH = plotW - plotLeft - plotRight, plotH - plotTop - plotBottom
	plotYTicks             = 4
	plotSeriesClasses      = 4 // colours, in the page's style sheet
)

type plotView struct {
	Title, Unit, Empty string
	W, H               int
	X0, X1, Y0, Y1     int // the plot area's edges
	XTicks, YTicks     []plotTick
	Series             []plotSeries
	Points             int
}

type plotTick struct {
	Pos   float64
	Label string
}

type plotSeries struct {
	Name, Class, Points, Last string
}

type seriesDef struct {
	name  string
	value func(Sample) float64
}

func newPlots(pp *PoolPage, now time.Time) []plotView {
	h := pp.History
	conns := []seriesDef{
		{"in use", func(s Sample) float64 { return float64(s.InUse) }},
		{"idle", func(s Sample) float64 { return float64(s.Idle) }},
	}
	if pp.Stats.MaxOpenConnections > 0 {
		conns = append(conns, seriesDef{"max", func(s Sample) float64 { return float64(s.MaxOpen) }})
	}
	return []plotView{
		newPlot("Connections", "connections", h, now, conns),
		newPlot("Waits for a connection", "waits started per interval; waiting now", h, now, []seriesDef{
			{"waits started", func(s Sample) float64 { return float64(s.Waits) }},
			{"waiting now", func(s Sample) float64 { return float64(s.Waiting) }},
		}),
		newPlot("Wait time", "seconds: of the waits that ended per interval; the longest wait in progress", h, now, []seriesDef{
			{"ended waits", func(s Sample) float64 { return s.WaitTime.Seconds() }},
			{"longest wait now", func(s Sample) float64 { return s.LongestWait.Seconds() }},
		}),
		newPlot("Checkouts", "per second", h, now, []seriesDef{
			{"checkouts/s", func(s Sample) float64 {
				if s.Interval <= 0 {
					return 0
				}
				return float64(s.Checkouts) / s.Interval.Seconds()
			}},
		}),
		newPlot("Leaks by kind", "reports since the pool opened", h, now, []seriesDef{
			{"suspected", func(s Sample) float64 { return float64(s.Suspected) }},
			{"garbage-collected", func(s Sample) float64 { return float64(s.GarbageCollected) }},
			{"still out", func(s Sample) float64 { return float64(s.StillOut) }},
			{"deadlocks", func(s Sample) float64 { return float64(s.Deadlocks) }},
		}),
	}
}

// newPlot lays out one plot: time on x, from the oldest sample (at least
// a minute, at most 15 minutes back) to now; 0 to a round maximum on y.
// Every series has one point per sample.
func newPlot(title, unit string, h []Sample, now time.Time, defs []seriesDef) plotView {
	p := plotView{Title: title, Unit: unit, W: plotW, H: plotH,
		X0: plotLeft, X1: plotW - plotRight, Y0: plotTop, Y1: plotH - plotBottom, Points: len(h)}
	if len(h) == 0 {
		p.Empty = "no samples yet"
	}
	span := time.Minute
	if len(h) > 0 {
		span = min(max(now.Sub(h[0].At), time.Minute), historySpan)
	}
	top := 0.0
	vals := make([][]float64, len(defs))
	for i, d := range defs {
		vals[i] = make([]float64, len(h))
		for j, s := range h {
			v := d.value(s)
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				v = 0
			}
			vals[i][j] = v
			top = max(top, v)
		}
	}
	top = niceCeil(top)
	xOf := func(t time.Time) float64 {
		f := 1 - float64(now.Sub(t))/float64(span)
		return plotLeft + float64(plotInnerW)*min(max(f, 0), 1)
	}
	yOf := func(v float64) float64 { return plotTop + float64(plotInnerH)*(1-v/top) }
	for i, d := range defs {
		var b strings.Builder
		for j, s := range h {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", xOf(s.At), yOf(vals[i][j]))
		}
		last := ""
		if len(h) > 0 {
			last = num(vals[i][len(h)-1])
		}
		p.Series = append(p.Series, plotSeries{Name: d.name, Class: "s" + strconv.Itoa(i%plotSeriesClasses), Points: b.String(), Last: last})
	}
	for k := 0; k <= plotYTicks; k++ {
		v := top * float64(k) / plotYTicks
		p.YTicks = append(p.YTicks, plotTick{Pos: yOf(v), Label: num(v)})
	}
	step := tickStep(span)
	for d := time.Duration(0); d <= span; d += step {
		label := "now"
		switch {
		case d%time.Minute == 0 && d > 0:
			label = fmt.Sprintf("−%dm", d/time.Minute)
		case d > 0:
			label = "−" + d.String()
		}
		p.XTicks = append(p.XTicks, plotTick{Pos: xOf(now.Add(-d)), Label: label})
	}
	return p
}

// tickStep is the x-axis tick spacing: at most six ticks over span.
func tickStep(span time.Duration) time.Duration {
	for _, s := range []time.Duration{10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 3 * time.Minute, 5 * time.Minute} {
		if span/s <= 6 {
			return s
		}
	}
	return 5 * time.Minute
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten; 1 for v ≤ 0.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*e*(1+1e-9) {
			return m * e
		}
	}
	return 10 * e
}

// num formats a plotted value: integers as such, others with up to three
// significant digits.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
