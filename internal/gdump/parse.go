package gdump

import (
	"strconv"
	"strings"
	"time"
)

// Goroutine is one goroutine of a dump.
type Goroutine struct {
	ID uint64
	// State is the status or wait reason as printed, without the
	// annotations parsed into the fields below: "running", "runnable",
	// "select", "chan receive", "IO wait", "sync.Mutex.Lock",
	// "semacquire", "select (no cases)", "syscall", ...
	State string
	// Wait is how long the goroutine has been blocked, as the runtime
	// prints it: whole minutes only, so 0 under a minute (and for
	// goroutines that are not waiting).
	Wait   time.Duration
	Locked bool // "locked to thread": runtime.LockOSThread or a cgo callback
	Leaked bool // "(leaked)": reported by the goroutine leak detector (Go 1.26+)
	// Bubble is the synctest bubble's ID, 0 outside one.
	Bubble uint64
	// Labels is the raw text of the profiler labels ("labels:{...}"),
	// printed only with GODEBUG=tracebacklabels=1; empty otherwise.
	Labels string
	// Frames are the goroutine's frames, innermost first. Runtime
	// frames are hidden by the runtime unless GOTRACEBACK=system.
	Frames []Frame
	// Elided counts frames the runtime left out of the middle of a deep
	// stack ("...N frames elided..."): Frames[:ElidedAt] are the
	// innermost frames, Frames[ElidedAt:] the outermost.
	Elided   int
	ElidedAt int
	// StackUnavailable is set for "goroutine running on other thread;
	// stack unavailable" (seen in crash dumps, not in runtime.Stack).
	StackUnavailable bool
	// CreatedBy is the go statement that started the goroutine; zero for
	// the main goroutine and runtime-started ones.
	CreatedBy Frame
	// CreatorID is the goroutine that ran that go statement ("in
	// goroutine N"), 0 when not printed.
	CreatorID uint64
	// Ancestors are the creating goroutines' stacks at the time of the
	// go statements, innermost creator first; printed only with
	// GODEBUG=tracebackancestors=N.
	Ancestors []Ancestor
	// Truncated is set when the dump's text ended inside this goroutine:
	// its frames, or its creator, may be missing.
	Truncated bool
}

// Ancestor is a creator's stack printed with GODEBUG=tracebackancestors
// ("[originating from goroutine N]:").
type Ancestor struct {
	ID        uint64
	Frames    []Frame // function, file and line only: no arguments
	Elided    bool    // "...additional frames elided..."
	CreatedBy Frame
}

// Frame is one printed frame.
type Frame struct {
	// Function is the function name as printed: "main.main",
	// "database/sql.(*DB).conn", "main.(*G[...]).wait" (type arguments
	// are printed as "[...]"), "main.main.func1", "panic", or for C
	// frames the symbolizer's name or "non-Go function".
	Function string
	// Args is the raw text between the parentheses: argument words in
	// hex, with "{...}" around the words of one struct, string,
	// interface or slice argument, "?" after a word that may be stale,
	// "_" for a dead one, "..." for more or for an inlined frame (whose
	// arguments are never printed). See Arg.
	Args string
	File string
	Line int
	// Offset is the "+0x..." PC offset into the function, 0 when absent
	// (inlined frames).
	Offset uint64
	// PC is the "pc=0x..." of a C frame (or of any frame under
	// GOTRACEBACK=system), 0 when absent.
	PC uint64
}

// Inlined reports whether the frame was inlined into its caller: the
// runtime prints "(...)" for those, with no PC offset.
func (f Frame) Inlined() bool { return f.Args == "..." && f.Offset == 0 }

// Package returns the package path part of Function:
// "database/sql" for "database/sql.(*DB).conn". For an import path whose
// last element has a dot (gopkg.in/yaml.v3) it returns the text before
// that dot; there is no way to tell from the name alone.
func (f Frame) Package() string {
	name := f.Function
	slash := strings.LastIndexByte(name, '/')
	dot := strings.IndexByte(name[slash+1:], '.')
	if dot < 0 {
		return ""
	}
	return name[:slash+1+dot]
}

// String formats the frame as "function file:line".
func (f Frame) String() string {
	if f.File == "" {
		return f.Function
	}
	return f.Function + " " + f.File + ":" + strconv.Itoa(f.Line)
}

// ArgWords returns the top-level arguments as printed: a plain word
// ("0xc000123450", "0x1?", "_", "..."), or a braced group for a
// multi-word argument ("{0x4f1390, 0x5d92e0}"). Results are sub-strings
// of Args.
func (f Frame) ArgWords() []string {
	var words []string
	for i := 0; ; i++ {
		w, ok := f.argWord(i)
		if !ok {
			return words
		}
		words = append(words, w)
	}
}

// argWord returns the i-th top-level argument word.
func (f Frame) argWord(i int) (string, bool) {
	s := f.Args
	depth, start, n := 0, 0, 0
	for j := 0; j <= len(s); j++ {
		if j < len(s) {
			switch s[j] {
			case '{':
				depth++
				continue
			case '}':
				if depth > 0 {
					depth--
				}
				continue
			case ',':
				if depth != 0 {
					continue
				}
			default:
				continue
			}
		}
		if n == i {
			w := strings.TrimSpace(s[start:j])
			return w, w != ""
		}
		n++
		start = j + 1
	}
	return "", false
}

// Arg returns the i-th top-level argument word as a number. ok is false
// if there is no such argument, or it is a braced group, "_", "...", or
// marked "?" (the runtime's sign that the value may not be current:
// arguments passed in registers are printed from their spill slots).
func (f Frame) Arg(i int) (v uint64, ok bool) {
	w, ok := f.argWord(i)
	if !ok || !strings.HasPrefix(w, "0x") {
		return 0, false
	}
	v, err := strconv.ParseUint(w[2:], 16, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}

// Parse parses the text of runtime.Stack(buf, true) (or of a crash's
// goroutine dump) into goroutines, in the order printed. It never panics:
// lines it does not recognise are skipped, and a dump cut short (a full
// buffer) gives a last goroutine marked Truncated. The strings in the
// result share dump's memory.
func Parse(dump string) []Goroutine {
	var p parser
	return p.parse(dump)
}

// ParseBytes is Parse for a byte slice; it copies b once.
func ParseBytes(b []byte) []Goroutine { return Parse(string(b)) }

type parser struct {
	gs     []Goroutine
	frames []Frame // arena for all goroutines' frames
	spans  []span  // per goroutine, its frames in the arena

	// where the next "\t" location line goes: frames[pendingIdx] (an
	// index, as the arena can move), or one of the pend constants
	pendingIdx int
	inAnc      bool // inside an ancestor block of the current goroutine
	anc        []Frame
}

type span struct{ lo, hi int }

const (
	pendNone    = -1
	pendCreated = -2
	pendAncCr   = -3
	pendAnc     = -4 // last of p.anc
)

func (p *parser) cur() *Goroutine {
	if len(p.gs) == 0 {
		return nil
	}
	return &p.gs[len(p.gs)-1]
}

func (p *parser) parse(s string) []Goroutine {
	p.pendingIdx = pendNone
	complete := strings.HasSuffix(s, "\n")
	// Size the result and the frame arena once: growing them by doubling
	// copies large structs and dominated the parse of big dumps.
	ng := strings.Count(s, "\ngoroutine ") + 1
	p.gs = make([]Goroutine, 0, ng)
	p.spans = make([]span, 0, ng)
	p.frames = make([]Frame, 0, strings.Count(s, "\n\t")) // location lines: an upper bound
	for len(s) > 0 {
		line := s
		nl := strings.IndexByte(s, '\n')
		if nl >= 0 {
			line, s = s[:nl], s[nl+1:]
		} else {
			s = ""
			// The last line was cut short by a full buffer: parsing it
			// could give a wrong line number or a wrong name. Drop it.
			break
		}
		p.line(strings.TrimSuffix(line, "\r"))
	}
	p.endAncestor()
	if !complete {
		if g := p.cur(); g != nil {
			g.Truncated = true
		}
	}
	// Hand out the arena.
	for i := range p.gs {
		sp := p.spans[i]
		if sp.hi > sp.lo {
			p.gs[i].Frames = p.frames[sp.lo:sp.hi:sp.hi]
		}
	}
	return p.gs
}

func (p *parser) line(line string) {
	g := p.cur()
	switch {
	case line == "":
		p.endAncestor()
		p.pendingIdx = pendNone
		return
	case strings.HasPrefix(line, "goroutine "):
		if ng, ok := parseHeader(line); ok {
			p.endAncestor()
			p.gs = append(p.gs, ng)
			p.spans = append(p.spans, span{len(p.frames), len(p.frames)})
			p.pendingIdx = pendNone
			return
		}
	}
	if g == nil {
		return // text before the first goroutine
	}
	switch {
	case line[0] == '\t':
		p.location(g, line[1:])
		return
	case strings.HasPrefix(line, "[originating from goroutine ") && strings.HasSuffix(line, "]:"):
		p.endAncestor()
		id, err := strconv.ParseUint(line[len("[originating from goroutine "):len(line)-2], 10, 64)
		if err != nil {
			p.pendingIdx = pendNone
			return
		}
		g.Ancestors = append(g.Ancestors, Ancestor{ID: id})
		p.inAnc = true
		p.pendingIdx = pendNone
		return
	case line == "...additional frames elided...":
		if p.inAnc {
			g.Ancestors[len(g.Ancestors)-1].Elided = true
		}
		p.pendingIdx = pendNone
		return
	case strings.HasPrefix(line, "...") && strings.HasSuffix(line, " frames elided..."):
		if n, err := strconv.Atoi(line[3 : len(line)-len(" frames elided...")]); err == nil && !p.inAnc {
			g.Elided = n
			g.ElidedAt = len(p.frames) - p.spans[len(p.spans)-1].lo
		}
		p.pendingIdx = pendNone
		return
	case strings.HasPrefix(line, "created by "):
		name := line[len("created by "):]
		var creator uint64
		if i := strings.LastIndex(name, " in goroutine "); i >= 0 {
			if id, err := strconv.ParseUint(name[i+len(" in goroutine "):], 10, 64); err == nil {
				creator, name = id, name[:i]
			}
		}
		if p.inAnc {
			g.Ancestors[len(g.Ancestors)-1].CreatedBy = Frame{Function: name}
			p.pendingIdx = pendAncCr
		} else {
			g.CreatedBy = Frame{Function: name}
			g.CreatorID = creator
			p.pendingIdx = pendCreated
		}
		return
	case strings.HasPrefix(line, "non-Go function at pc="):
		pc, _ := parseHex(line[len("non-Go function at pc="):])
		p.addFrame(Frame{Function: "non-Go function", PC: pc})
		p.pendingIdx = pendNone // no location line follows
		return
	}
	// A function line: "name(args)", or a symbolised C function's bare
	// name (its location line follows).
	var f Frame
	if strings.HasSuffix(line, ")") {
		if i := strings.LastIndexByte(line, '('); i > 0 {
			f.Function, f.Args = line[:i], line[i+1:len(line)-1]
		}
	}
	if f.Function == "" {
		if strings.ContainsAny(line, " \t") && line != "non-Go function" {
			p.pendingIdx = pendNone
			return // not something we know
		}
		f.Function = line
	}
	p.addFrame(f)
}

func (p *parser) addFrame(f Frame) {
	if p.inAnc {
		p.anc = append(p.anc, f)
		p.pendingIdx = pendAnc
		return
	}
	p.frames = append(p.frames, f)
	p.spans[len(p.spans)-1].hi = len(p.frames)
	p.pendingIdx = len(p.frames) - 1
}

// endAncestor stores the ancestor frames collected so far.
func (p *parser) endAncestor() {
	if !p.inAnc {
		return
	}
	if g := p.cur(); g != nil && len(g.Ancestors) > 0 && len(p.anc) > 0 {
		g.Ancestors[len(g.Ancestors)-1].Frames = append([]Frame(nil), p.anc...)
	}
	p.anc = p.anc[:0]
	p.inAnc = false
}

// location parses "file:line +0x1f fp=0x... sp=0x... pc=0x..." (every
// part after line optional) into the pending frame.
func (p *parser) location(g *Goroutine, loc string) {
	if loc == "goroutine running on other thread; stack unavailable" {
		g.StackUnavailable = true
		return
	}
	var f *Frame
	switch i := p.pendingIdx; {
	case i >= 0 && i < len(p.frames):
		f = &p.frames[i]
	case i == pendCreated:
		f = &g.CreatedBy
	case i == pendAncCr && len(g.Ancestors) > 0:
		f = &g.Ancestors[len(g.Ancestors)-1].CreatedBy
	case i == pendAnc && len(p.anc) > 0:
		f = &p.anc[len(p.anc)-1]
	default:
		return
	}
	p.pendingIdx = pendNone
	// Split off the " key=value" and " +0x" suffixes from the right, so
	// that a file name with spaces survives.
	rest := loc
	for {
		sp := strings.LastIndexByte(rest, ' ')
		if sp < 0 {
			break
		}
		tok := rest[sp+1:]
		switch {
		case strings.HasPrefix(tok, "+0x"):
			f.Offset, _ = parseHex(tok[1:])
		case strings.HasPrefix(tok, "pc="):
			f.PC, _ = parseHex(tok[3:])
		case strings.HasPrefix(tok, "fp="), strings.HasPrefix(tok, "sp="):
		default:
			goto done
		}
		rest = rest[:sp]
	}
done:
	if strings.HasPrefix(rest, "pc=") { // "non-Go function\n\tpc=0x..."
		f.PC, _ = parseHex(rest[3:])
		return
	}
	colon := strings.LastIndexByte(rest, ':')
	if colon < 0 {
		f.File = rest
		return
	}
	n, err := strconv.Atoi(rest[colon+1:])
	if err != nil || n < 0 {
		f.File = rest
		return
	}
	f.File, f.Line = rest[:colon], n
}

func parseHex(s string) (uint64, bool) {
	if !strings.HasPrefix(s, "0x") {
		return 0, false
	}
	v, err := strconv.ParseUint(s[2:], 16, 64)
	return v, err == nil
}

// parseHeader parses "goroutine N [status, N minutes, locked to thread,
// synctest bubble N labels:{...}]:" and the "goroutine N gp=... m=... ["
// form printed under GOTRACEBACK=system.
func parseHeader(line string) (Goroutine, bool) {
	var g Goroutine
	rest := line[len("goroutine "):]
	end := 0
	for end < len(rest) && '0' <= rest[end] && rest[end] <= '9' {
		end++
	}
	id, err := strconv.ParseUint(rest[:end], 10, 64)
	if err != nil || !strings.HasSuffix(rest, "]:") {
		return g, false
	}
	open := strings.Index(rest[end:], " [")
	if open < 0 {
		return g, false
	}
	g.ID = id
	body := rest[end+open+2 : len(rest)-2]
	if i := strings.Index(body, " labels:{"); i >= 0 {
		g.Labels, body = body[i+1:], body[:i]
	}
	state, rest, _ := strings.Cut(body, ", ")
	for {
		switch {
		case strings.HasSuffix(state, " (scan)"):
			state = state[:len(state)-len(" (scan)")]
			continue
		case strings.HasSuffix(state, " (leaked)"):
			state = state[:len(state)-len(" (leaked)")]
			g.Leaked = true
			continue
		}
		break
	}
	g.State = state
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, ", ")
		switch {
		case part == "locked to thread":
			g.Locked = true
		case strings.HasSuffix(part, " minutes"):
			if n, err := strconv.ParseInt(part[:len(part)-len(" minutes")], 10, 64); err == nil && n > 0 && n < 1<<33 {
				g.Wait = time.Duration(n) * time.Minute
			}
		case strings.HasPrefix(part, "synctest bubble "):
			g.Bubble, _ = strconv.ParseUint(part[len("synctest bubble "):], 10, 64)
		}
	}
	return g, true
}
