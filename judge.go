package pgxleak

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Verdict is a pool's diagnosis in one word, with its reasoning in
// numbers: is the pool leaking, too small for its load, blocked on the
// server, deadlocked, or fine? It answers the first question asked of an
// exhausted pool, "is it a leak, or is the pool too small?", from what the
// pool measures: its checkouts per second and their mean use time, its
// waits and timeouts, its holders and their verdicts, and the server's
// limits. [Inspect] returns it, the exhaustion warning and the live page
// show it, and the metric pgxleak.pool.verdict carries it as the attribute
// pgxleak.verdict.
type poolVerdict struct {
	// Kind is one of, in this order of precedence:
	//   - "deadlocked": goroutines wait for a connection while holding one
	//     of the same pool;
	//   - "leaking": connections are held by leaks: held past the leak
	//     threshold and idle on the server, or their goroutine has exited;
	//   - "blocked": connections wait on the server for locks other
	//     sessions hold, while callers wait or past the leak threshold;
	//   - "undersized": callers wait (100ms per second or more, or time out)
	//     and none of the above explains it;
	//   - "healthy".
	Kind string `json:"kind"`
	// Reason is the reasoning in numbers, e.g. "undersized: by Little's
	// law the load needs ≈ 6.1 connections (61 checkouts/s × 100ms mean
	// use), the pool has 2; callers waited 0.8s per second, 23 timed out;
	// the server allows 24 per instance (97 available − 9 headroom, 4
	// instances)".
	Reason string `json:"reason"`
	// Needed is the connections the load needs by Little's law: the rate
	// at which callers ask for connections times the mean use time, over
	// the last 30 seconds; 0 while unknown (no return yet). The rate is
	// the returns, timeouts and growth of the queue per second, and at
	// least the waits started per second: callers whose own pace depends
	// on the pool's (a fixed set of workers) ask less often while they
	// wait, so for them it is a lower bound.
	Needed float64 `json:"needed"`
	// PerInstance is what the server allows each instance of this service
	// and pool: its connections available to clients, less headroom,
	// divided by Instances, the instances connected now; both 0 while
	// unknown (behind PgBouncer, WithoutServerView, before the first read).
	PerInstance int `json:"per_instance,omitempty"`
	Instances   int `json:"instances,omitempty"`
}

// judgeInput is what the verdict is made from.
type judgeInput struct {
	maxOpen   int       // 0 means unlimited
	inUse     int       // DBStats.InUse now
	load      loadRates // over the window
	pending   int64     // callers waiting now
	slowWait  time.Duration
	checkouts []Checkout // with Holder and Server where known
	waiters   []Goroutine
	server    serverShare
}

// loadRates is the pool's load over a window of samples.
type loadRates struct {
	seconds  float64       // the window's length; 0 if fewer than two samples
	returns  uint64        // checkouts returned in it
	held     time.Duration // their use time, in all
	waits    int64         // waits started in it
	waitTime time.Duration // wait time of the waits that ended in it
	timeouts int64         // waits that gave up in it
	queued   int64         // growth of the pending requests over it
}

// serverShare is what the server allows, and how many instances of this
// service and pool share it.
type serverShare struct {
	known     bool
	available int // max_connections − reserved
	headroom  int
	clients   int // client backends now
	instances int // distinct application_names of this service and pool
}

// perInstance is (available − headroom) / instances.
func (s serverShare) perInstance() int {
	if !s.known || s.instances < 1 {
		return 0
	}
	return max(s.available-s.headroom, 0) / s.instances
}

// judge makes the verdict. It is a pure function of its input.
func judge(in judgeInput) poolVerdict {
	v := poolVerdict{PerInstance: in.server.perInstance()}
	if in.server.known {
		v.Instances = in.server.instances
	}
	l := in.load
	var rate, meanUse float64 // checkouts asked for per second; seconds
	if l.seconds > 0 && l.returns > 0 {
		// Callers ask for connections at the rate they are served, time
		// out or queue up; and at least at the rate they start waiting,
		// less the connections out (every caller of a full pool waits,
		// and a served waiter returns its connection): timeouts shorter
		// than the dumps' spacing are not counted (pending.go), the
		// waits are.
		asked := float64(l.returns) + float64(l.timeouts) + float64(max(l.queued, 0))
		asked = max(asked, float64(l.waits-int64(in.maxOpen)))
		meanUse = l.held.Seconds() / float64(l.returns)
		rate = asked / l.seconds
		v.Needed = rate * meanUse
	}
	m := "unlimited"
	if in.maxOpen > 0 {
		m = strconv.Itoa(in.maxOpen)
	}

	// Deadlocked: a waiter holds a connection of the same pool.
	var self []string
	for _, w := range in.waiters {
		for _, c := range w.Holds {
			self = append(self, shortLine(w.At)+" holding "+shortLine(c.Culprit))
		}
	}
	if len(self) > 0 {
		v.Kind = "deadlocked"
		v.Reason = fmt.Sprintf("deadlocked: %s for a connection while holding one of the same pool (waiting at %s); %d of %s connections in use",
			numbered(len(self), "goroutine waits", "goroutines wait"), countStrings(self), in.inUse, m)
		return v
	}

	// Leaking: held past the threshold and idle on the server, or the
	// holder has exited.
	var leaked []string
	var longest time.Duration
	for _, c := range in.checkouts {
		if leakedCheckout(c) {
			leaked = append(leaked, shortLine(c.Culprit)+c.holderNote())
			longest = max(longest, c.Held)
		}
	}
	waiting := in.pending > 0 || l.timeouts > 0 || (l.seconds > 0 && l.waitTime.Seconds()/l.seconds >= in.slowWait.Seconds() && l.waitTime > 0)
	if len(leaked) > 0 {
		v.Kind = "leaking"
		v.Reason = fmt.Sprintf("leaking: %d of %s connections held by leaks at %s (the longest for %s)",
			len(leaked), m, countStrings(leaked), longest.Round(time.Second))
		if waiting {
			v.Reason += fmt.Sprintf("; %s waiting, %d timed out in the last %.0fs", numbered(int(in.pending), "caller", "callers"), l.timeouts, l.seconds)
		}
		return v
	}

	// Blocked: connections wait on locks held by other sessions.
	var blockers []string
	blocked := 0
	longBlocked := false
	for _, c := range in.checkouts {
		s := c.Server
		if s == nil || s.WaitEventType != "Lock" || len(s.BlockedBy) == 0 {
			continue
		}
		blocked++
		longBlocked = longBlocked || c.Suspected
		for _, pid := range s.BlockedBy {
			b := "PID " + strconv.FormatUint(uint64(pid), 10)
			if f, ok := s.Culprits[pid]; ok {
				b += " at " + shortLine(f)
			} else {
				b += " (not this pool)"
			}
			blockers = append(blockers, b)
		}
	}
	if blocked > 0 && (waiting || longBlocked) {
		v.Kind = "blocked"
		v.Reason = fmt.Sprintf("blocked on the server: %d of %s connections wait on locks held by %s",
			blocked, m, countStrings(blockers))
		if waiting {
			v.Reason += fmt.Sprintf("; %s waiting for a connection", numbered(int(in.pending), "caller", "callers"))
		}
		return v
	}

	if waiting {
		v.Kind = "undersized"
		var b strings.Builder
		if v.Needed > 0 {
			fmt.Fprintf(&b, "undersized: by Little's law the load needs ≈ %.1f connections (%.1f checkouts/s × %s mean use), the pool has %s",
				v.Needed, rate, roundDuration(meanUse), m)
		} else {
			fmt.Fprintf(&b, "undersized: callers wait and no use time is measured yet; the pool has %s", m)
		}
		fmt.Fprintf(&b, "; callers waited %.2fs per second, %d timed out, %d waiting now", l.waitTime.Seconds()/math.Max(l.seconds, 1e-9), l.timeouts, in.pending)
		if v.PerInstance > 0 {
			fmt.Fprintf(&b, "; the server allows %d per instance (%d available − %d headroom, %d instances)",
				v.PerInstance, in.server.available, in.server.headroom, in.server.instances)
			if v.Needed > float64(v.PerInstance) {
				b.WriteString(": more than it can give; add a pooler (PgBouncer) or lower the use time")
			}
		}
		v.Reason = b.String()
		return v
	}

	v.Kind = "healthy"
	if v.Needed > 0 {
		v.Reason = fmt.Sprintf("healthy: the load needs ≈ %.1f connections (%.1f checkouts/s × %s mean use), the pool has %s; no caller waited long",
			v.Needed, rate, roundDuration(meanUse), m)
	} else {
		v.Reason = "healthy: no load measured yet; no caller waited"
	}
	return v
}

// leakedCheckout reports whether c is held by a leak: its goroutine has
// exited, or it is held past the leak threshold (Suspected) and is not
// busy on the server (a long query or a lock wait is not a leak).
func leakedCheckout(c Checkout) bool {
	if c.OnPurpose != "" { // held on purpose (WithIgnoredFunction): never a leak
		return false
	}
	if c.Holder != nil && c.Holder.Exited {
		return true
	}
	if !c.Suspected {
		return false
	}
	return c.Server == nil || c.Server.State != "active"
}

// holderNote is " (goroutine exited)" or " (idle in transaction)", or "".
func (c Checkout) holderNote() string {
	switch {
	case c.Holder != nil && c.Holder.Exited:
		return " (goroutine exited)"
	case c.Server != nil && c.Server.State != "":
		return " (" + c.Server.State + ")"
	}
	return ""
}

// countStrings groups equal strings, most frequent first: "a ×3, b".
func countStrings(ss []string) string {
	n := map[string]int{}
	for _, s := range ss {
		n[s]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if n[a] != n[b] {
			return n[b] - n[a]
		}
		return strings.Compare(a, b)
	})
	for i, k := range keys {
		if n[k] > 1 {
			keys[i] = fmt.Sprintf("%s ×%d", k, n[k])
		}
	}
	return strings.Join(keys, ", ")
}

// roundDuration renders seconds as a duration to three significant digits.
func roundDuration(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
