package livepage

import (
	"cmp"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// page.html is the live page's template: the page, and the "pools"
// fragment its script fetches to refresh itself. Everything it shows goes
// through html/template's contextual escaping.
//
//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"numbered": numbered}).Parse(pageHTML))

// numbered is n with the noun that agrees with it: "1 goroutine", "2
// goroutines" (the root package's rule, for the page's own messages).
func numbered(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// liveEvery is how often the page's script refreshes the pools.
const liveEvery = 5 * time.Second

func renderPage(w io.Writer, p Page, nonce string) error {
	return pageTemplate.Execute(w, newPageView(p, nonce))
}

func renderPools(w io.Writer, p Page) error {
	return pageTemplate.ExecuteTemplate(w, "pools", newPageView(p, ""))
}

// pageView is what the template renders: the page with every value
// formatted and the plots laid out.
type pageView struct {
	TakenAt   string
	Nonce     string
	LiveEvery int // milliseconds
	Pools     []poolView
}

type poolView struct {
	ID         string
	Name       string
	Summary    string
	Notes      []string
	Deadlocks  []string
	Alerts     []string // stuck without a deadlock: slow waits in progress, connections blocked on a lock held by another
	Plots      []plotView
	Holders    []holderView
	NotShown   int
	Waiters    []waiterGroup
	WaitersNS  int
	Reports    []reportView
	Settings   [][2]string
	Capacity   []string
	ServerNote string // why the server's limits are not shown, if they are not
	Fleet      []fleetRow

	Verdict, VerdictKind string // the pool's verdict, with its reasoning
	VerdictBad           bool
}

type holderView struct {
	Key, Culprit, Held, Tx, Holder, Server, PID, Statement string
	HolderBad, Suspected                                   bool
	Stack, HolderStack                                     string
}

type waiterGroup struct {
	Key, At, Longest, Goroutines, Holds, Stack string
	Count                                      int
	Deadlock                                   bool
}

type reportView struct {
	Kind, Headline, Last, First, Stack string
	Count                              int
	Bad                                bool
}

type fleetRow struct {
	pgxleak.FleetUsage
	Self bool
}

func newPageView(p Page, nonce string) pageView {
	v := pageView{TakenAt: p.TakenAt.Format("15:04:05 MST, 2 Jan 2006"), Nonce: nonce, LiveEvery: int(liveEvery / time.Millisecond)}
	for i := range p.Pools {
		v.Pools = append(v.Pools, newPoolView(i, &p.Pools[i], p.TakenAt))
	}
	return v
}

func newPoolView(i int, pp *PoolPage, now time.Time) poolView {
	st := pp.Stats
	v := poolView{
		ID:         "pool-" + strconv.Itoa(i),
		Name:       pp.Pool,
		Notes:      pp.Notes,
		NotShown:   pp.CheckoutsNotShown,
		WaitersNS:  pp.WaitersNotShown,
		ServerNote: serverNote(pp),

		Verdict:     pp.VerdictReason,
		VerdictKind: pp.Verdict,
		VerdictBad:  pp.Verdict != "healthy" && pp.Verdict != "",
	}
	maxOpen := "unlimited"
	if st.MaxOpenConnections > 0 {
		maxOpen = strconv.Itoa(st.MaxOpenConnections)
	}
	waiting := "none waiting now"
	if st.Waiting > 0 {
		waiting = fmt.Sprintf("%d waiting now, the longest for at least %s", st.Waiting, atLeast(st.LongestWait))
	}
	v.Summary = fmt.Sprintf("%d of %s connections in use, %d idle; %d checked out by users; %d waits for a connection so far (%s in all, counted as they end), %s; %d checkouts, %d suspected leaks (%d came back), %d garbage-collected, %d still out at close",
		st.InUse, maxOpen, st.Idle, st.CheckedOut, st.WaitCount, short(st.WaitDuration), waiting, st.Checkouts, st.Suspected, st.Resolved, st.GarbageCollected, st.StillOut)

	// The holders, and who holds which backend, for the server's
	// "blocked by" PIDs.
	byPID := make(map[uint32]pgxleak.Checkout)
	for _, c := range pp.Checkouts {
		if c.BackendPID != 0 {
			byPID[c.BackendPID] = c
		}
	}
	for _, c := range pp.Checkouts {
		v.Holders = append(v.Holders, newHolderView(v.ID, c, byPID))
	}

	v.Waiters = groupWaiters(v.ID, pp.Waiters)
	for _, g := range v.Waiters {
		if g.Deadlock {
			v.Deadlocks = append(v.Deadlocks, fmt.Sprintf("DEADLOCK: %s for a connection at %s while holding one of the same pool, checked out at %s: they wait for themselves.",
				numbered(g.Count, "goroutine waits", "goroutines wait"), g.At, g.Holds))
		}
	}
	if wholePoolDeadlocked(pp) {
		v.Deadlocks = append([]string{fmt.Sprintf("The whole pool is deadlocked: all %d connections are held by goroutines that are themselves waiting for a connection of this pool.", st.InUse)}, v.Deadlocks...)
	}
	if s := slowWaits(pp, v.Waiters); s != "" {
		v.Alerts = append(v.Alerts, s)
	}
	v.Alerts = append(v.Alerts, lockWaits(pp.Checkouts, byPID)...)

	for _, r := range pp.Reports {
		kind := r.Kind.String()
		if r.Kind == pgxleak.Deadlock && r.Checkout == nil {
			kind = "pool_deadlocked" // the whole pool's deadlock, not one checkout's
		}
		rv := reportView{Kind: kind, Headline: r.Headline, Count: r.Count, Last: ago(now, r.Last), First: ago(now, r.First),
			Bad: r.Kind == pgxleak.Deadlock || r.Kind == pgxleak.LeakGarbageCollected}
		if r.Checkout != nil && len(r.Checkout.Stack) > 0 {
			rv.Stack = formatStack(r.Checkout.Stack)
		}
		v.Reports = append(v.Reports, rv)
	}

	v.Plots = newPlots(pp, now)
	v.Settings = settingsRows(pp.Settings)
	v.Capacity = capacityLines(pp, st)
	if sv := pp.Server; sv != nil {
		for _, f := range sv.Fleet {
			v.Fleet = append(v.Fleet, fleetRow{FleetUsage: f, Self: f.ApplicationName == sv.ApplicationName})
		}
	}
	return v
}

// serverNote says why the server's limits are not shown: off, behind
// PgBouncer, or the inspection's note on the read.
func serverNote(pp *PoolPage) string {
	switch {
	case pp.Server != nil:
		return ""
	case !pp.Settings.ServerView:
		return "unavailable: server view off"
	case pp.Settings.PgBouncer:
		return "unavailable: behind PgBouncer: pg_stat_activity would show PgBouncer's connections, not this pool's"
	}
	for _, n := range pp.Notes {
		if r, ok := strings.CutPrefix(n, "server limits unavailable: "); ok {
			return "unavailable: " + r
		}
	}
	return "unavailable: not read yet (the page shows it when it is)"
}

func newHolderView(poolID string, c pgxleak.Checkout, byPID map[uint32]pgxleak.Checkout) holderView {
	h := holderView{
		Key:       fmt.Sprintf("%s-h-%d-%d", poolID, c.BackendPID, c.CheckedOutAt.UnixNano()),
		Culprit:   c.Culprit.String(),
		Held:      short(c.Held),
		Tx:        c.TxStatus,
		Holder:    "unknown",
		Server:    "unknown",
		Statement: c.LastStatement,
		Suspected: c.Suspected,
		Stack:     formatStack(c.Stack),
	}
	if c.OnPurpose != "" {
		h.Held += ", held on purpose (" + c.OnPurpose + ")"
	}
	if c.BackendPID != 0 {
		h.PID = strconv.FormatUint(uint64(c.BackendPID), 10)
	}
	if g := c.Holder; g != nil {
		switch {
		case g.Exited:
			h.Holder, h.HolderBad = "exited: nothing can return it unless it handed its Rows, Tx or Conn to another goroutine", true
		case g.Returned:
			h.Holder = fmt.Sprintf("goroutine %d alive, but the function that took it returned without releasing it: a leak unless it handed its Rows, Tx or Conn on", g.ID)
			h.HolderBad = true
		default:
			s := fmt.Sprintf("goroutine %d", g.ID)
			if g.State != "" {
				s += ", " + g.State
				if g.Waiting > 0 {
					s += " for " + short(g.Waiting)
				}
			}
			if g.At.Line != 0 {
				s += ", now at " + g.At.String()
			}
			h.Holder = s
		}
		if g.MatchedBy != "" && g.MatchedBy != "goroutine id" {
			h.Holder += " (matched by " + g.MatchedBy + ")"
		}
		if len(g.Stack) > 0 {
			h.HolderStack = formatStack(g.Stack)
		}
	}
	if s := c.Server; s != nil {
		parts := []string{s.State}
		if s.WaitEventType != "" && s.State == "active" { // an idle backend waits for its client: no news
			parts = append(parts, "waiting on "+s.WaitEventType+" "+s.WaitEvent)
		}
		name := func(verb string, pid uint32) string {
			b := fmt.Sprintf("%s PID %d", verb, pid)
			if other, ok := byPID[pid]; ok {
				b += " (checked out at " + other.Culprit.String() + ")"
			}
			return b
		}
		for _, pid := range s.BlockedBy {
			parts = append(parts, name("blocked by", pid))
		}
		for _, pid := range s.Blocking {
			parts = append(parts, name("blocking", pid))
		}
		h.Server = strings.Join(parts, ", ")
	}
	return h
}

// slowWaits is the banner for callers that have waited longer than the
// slow-wait threshold and wait still, with the lines they wait at; "" if
// none have.
func slowWaits(pp *PoolPage, groups []waiterGroup) string {
	st, limit := pp.Stats, pp.Settings.SlowWaitThreshold
	if st.Waiting == 0 || limit <= 0 || st.LongestWait < limit {
		return ""
	}
	s := fmt.Sprintf("SLOW WAITS: %s waiting for a connection now, the longest for at least %s (the slow-wait threshold is %s)",
		numbered(st.Waiting, "goroutine", "goroutines"), atLeast(st.LongestWait), limit)
	var at []string
	for _, g := range groups {
		at = append(at, fmt.Sprintf("%s ×%d", g.At, g.Count))
	}
	if len(at) > 0 {
		s += ", at " + strings.Join(at, ", ")
	}
	return s + "."
}

// lockWaits are the banners of a lock-stuck pool: for each checkout whose
// backend holds a lock that other checkouts of the pool wait for, the line
// that checked it out and the ones it blocks.
func lockWaits(cs []pgxleak.Checkout, byPID map[uint32]pgxleak.Checkout) []string {
	var order []uint32
	victims := make(map[uint32][]string)
	for _, c := range cs {
		if c.Server == nil || c.Server.WaitEventType != "Lock" {
			continue
		}
		for _, pid := range c.Server.BlockedBy {
			if _, ours := byPID[pid]; !ours {
				continue
			}
			if victims[pid] == nil {
				order = append(order, pid)
			}
			victims[pid] = append(victims[pid], fmt.Sprintf("PID %d, checked out at %s", c.BackendPID, c.Culprit))
		}
	}
	out := make([]string, 0, len(order))
	for _, pid := range order {
		b := byPID[pid]
		state := ""
		if b.Server != nil && b.Server.State != "" {
			state = ", " + b.Server.State
		}
		out = append(out, fmt.Sprintf("LOCK WAIT: the connection checked out at %s (PID %d%s) holds locks that %s of this pool wait for (%s): fix %s.",
			b.Culprit, pid, state, numbered(len(victims[pid]), "other connection", "other connections"), strings.Join(victims[pid], "; "), b.Culprit))
	}
	return out
}

// groupWaiters groups the waiters by the line that asked for a
// connection, deadlocked groups first, then the largest.
func groupWaiters(poolID string, ws []pgxleak.Goroutine) []waiterGroup {
	type group struct {
		at       pgxleak.Frame
		deadlock bool
		n        int
		longest  time.Duration
		ids      []string
		holds    []string
		stack    []pgxleak.Frame
	}
	var order []*group
	groups := make(map[[2]any]*group)
	for _, w := range ws {
		dl := len(w.Holds) > 0
		k := [2]any{w.At, dl}
		g := groups[k]
		if g == nil {
			g = &group{at: w.At, deadlock: dl, stack: w.Stack}
			groups[k] = g
			order = append(order, g)
		}
		g.n++
		g.longest = max(g.longest, w.Waiting, w.Waited)
		if len(g.ids) < 20 {
			g.ids = append(g.ids, strconv.FormatUint(w.ID, 10))
		}
		for _, c := range w.Holds {
			if s := c.Culprit.String(); !slices.Contains(g.holds, s) {
				g.holds = append(g.holds, s)
			}
		}
	}
	slices.SortStableFunc(order, func(a, b *group) int {
		if a.deadlock != b.deadlock {
			if a.deadlock {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.n, a.n)
	})
	out := make([]waiterGroup, len(order))
	for i, g := range order {
		ids := strings.Join(g.ids, ", ")
		if g.n > len(g.ids) {
			ids += fmt.Sprintf(" and %d more", g.n-len(g.ids))
		}
		longest := "under a minute"
		if g.longest > 0 {
			longest = short(g.longest)
		}
		out[i] = waiterGroup{
			Key:        fmt.Sprintf("%s-w-%d", poolID, i),
			At:         g.at.String(),
			Count:      g.n,
			Longest:    longest,
			Goroutines: ids,
			Holds:      strings.Join(g.holds, "; "),
			Deadlock:   g.deadlock,
			Stack:      formatStack(g.stack),
		}
	}
	return out
}

// wholePoolDeadlocked: the pool is full and every connection is held by a
// goroutine that is itself waiting for one.
func wholePoolDeadlocked(pp *PoolPage) bool {
	st := pp.Stats
	if st.MaxOpenConnections == 0 || st.InUse < st.MaxOpenConnections || len(pp.Checkouts) == 0 || pp.CheckoutsNotShown > 0 {
		return false
	}
	waiting := make(map[uint64]bool)
	for _, w := range pp.Waiters {
		waiting[w.ID] = true
	}
	for _, c := range pp.Checkouts {
		if c.Holder == nil || c.Holder.Exited || !waiting[c.Holder.ID] {
			return false
		}
	}
	return true
}

func settingsRows(s pgxleak.Settings) [][2]string {
	unl := func(n int64, zero string) string {
		if n == 0 {
			return zero
		}
		return strconv.FormatInt(n, 10)
	}
	dur := func(d time.Duration, zero string) string {
		if d == 0 {
			return zero
		}
		return d.String()
	}
	rows := [][2]string{
		{"max open connections", unl(int64(s.MaxOpen), "unlimited")},
		{"max idle connections", strconv.Itoa(s.MaxIdle)},
		{"min idle connections", strconv.Itoa(s.MinIdle)},
		{"connection max lifetime", dur(s.ConnMaxLifetime, "forever") + ", jitter " + dur(s.ConnMaxLifetimeJitter, "none")},
		{"connection max idle time", dur(s.ConnMaxIdleTime, "forever")},
		{"max uses per connection", unl(s.MaxUses, "unlimited")},
		{"leak threshold", dur(s.LeakThreshold, "off")},
		{"slow-wait threshold", dur(s.SlowWaitThreshold, "off")},
		{"wait sample interval", s.WaitSampleInterval.String()},
		{"report interval", dur(s.ReportInterval, "none")},
		{"stack depth", unl(int64(s.StackDepth), "off")},
		{"stack sampling", fmt.Sprintf("1 in %d checkouts", s.StackSampling)},
		{"statements recorded", strconv.FormatBool(s.Statements)},
		{"garbage-collection detection", strconv.FormatBool(s.GCDetection)},
		{"PgBouncer profile", strconv.FormatBool(s.PgBouncer)},
		{"server view (pg_stat_activity)", strconv.FormatBool(s.ServerView)},
		{"idle-in-transaction timeout", dur(s.IdleInTransactionTimeout, "the server's")},
	}
	if !s.Tuned {
		rows = append(rows, [2]string{"tuning", "not applied: opened with sql.Open, so database/sql's own limits apply"})
	}
	if s.LimitsFromOpen {
		rows = append(rows, [2]string{"pool limits", "as Open set them: this Go's database/sql cannot be read back, so later db.Set… calls do not show (max open excepted)"})
	}
	return rows
}

func capacityLines(pp *PoolPage, st pgxleak.PoolStats) []string {
	sv := pp.Server
	if sv == nil {
		return nil
	}
	var out []string
	max := "no limit: it can take every one of them"
	if st.MaxOpenConnections > 0 {
		max = fmt.Sprintf("%d (%.0f%% of them)", st.MaxOpenConnections, 100*float64(st.MaxOpenConnections)/float64(cmp.Or(sv.Available, 1)))
	}
	out = append(out, fmt.Sprintf("Server: max_connections %d − %d reserved = %d available to applications; this pool's maximum: %s.",
		sv.MaxConnections, sv.ReservedConnections, sv.Available, max))
	self := 0
	for _, f := range sv.Fleet {
		if f.ApplicationName == sv.ApplicationName {
			self = f.Connections
		}
	}
	out = append(out, fmt.Sprintf("%d client connections on the server now; %d of them named %q like this pool's (all its instances).",
		sv.InUse, self, sv.ApplicationName))
	return out
}

// formatStack renders frames like a goroutine's stack in a panic.
func formatStack(fs []pgxleak.Frame) string {
	out := make([]stack.Frame, len(fs))
	for i, f := range fs {
		out[i] = stack.Frame(f)
	}
	return stack.Format(out)
}

// short formats a duration for a table cell: "850ms", "12.3s", "4m5s".
func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// atLeast formats a lower bound as short does, rounding down.
func atLeast(d time.Duration) string {
	switch {
	case d < time.Second:
		return short(d.Truncate(time.Millisecond))
	case d < time.Minute:
		return short(d.Truncate(100 * time.Millisecond))
	}
	return short(d.Truncate(time.Second))
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return short(d) + " ago"
}
