package pgxleak

import (
	"fmt"
	"log/slog"

	"github.com/pgxleak/pgxleak/internal/goid"
)

// The OnLeak callback runs on a goroutine of its own, fed by a bounded
// queue, not on the monitor: a callback that closes or drains the pool,
// which waits for the monitor, would otherwise wait for itself. The monitor
// never blocks on the callback; Close waits until the callback has had
// every report queued before it, unless Close is called from the callback
// itself, in which case the rest is delivered after the callback returns.

// callbackQueue is how many reports the callback may fall behind before
// further ones skip it (they are still logged, traced and counted).
const callbackQueue = 256

// startDelivery starts the callback's goroutine, if there is a callback.
func (p *pool) startDelivery() {
	if p.cfg.onLeak == nil {
		return
	}
	p.monitor.callbacks = make(chan Leak, callbackQueue)
	p.monitor.delivered = make(chan struct{})
	go func() {
		defer close(p.monitor.delivered)
		p.monitor.deliverGoroutine.Store(goid.Slow())
		for l := range p.monitor.callbacks {
			p.cfg.onLeak(l)
		}
	}()
}

// deliver hands a report to the callback without waiting for it.
func (p *pool) deliver(l Leak) {
	switch {
	case p.cfg.onLeak == nil:
	case p.monitor.callbacks == nil: // no monitor was started: the caller is Close
		p.cfg.onLeak(l)
	default:
		select {
		case p.monitor.callbacks <- l:
			p.monitor.lagging.Store(false)
		default:
			if !p.monitor.lagging.Swap(true) {
				p.logger().Warn(fmt.Sprintf("pgxleak: the WithOnLeak callback is %d reports behind; reports skip it until it catches up", callbackQueue),
					slog.String("pool", l.Pool))
			}
		}
	}
}

// stopDelivery lets the callback finish the queued reports, and waits for
// it unless called from it. The monitor has exited: nothing sends any more.
func (p *pool) stopDelivery() {
	if p.monitor.callbacks == nil {
		return
	}
	close(p.monitor.callbacks)
	// The ID is read from the stack's header once per pool and once per
	// Close. Should it be unreadable (0 on both sides), Close does not wait:
	// a late callback is better than a deadlock.
	if goid.Slow() != p.monitor.deliverGoroutine.Load() {
		<-p.monitor.delivered
	}
}
