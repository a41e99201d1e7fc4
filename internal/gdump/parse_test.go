package gdump

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sampleDump = `goroutine 1 [running]:
main.main()
	/tmp/scratch/main.go:45 +0x2d3

goroutine 20 [select, 5 minutes]:
database/sql.(*DB).conn(0x1b86d311e1a0, {0x4f1390, 0x5d92e0}, 0x1)
	/usr/local/go/src/database/sql/sql.go:1369 +0x415
database/sql.(*DB).Conn.func1(0x0?)
	/usr/local/go/src/database/sql/sql.go:1950 +0x3a
main.main.func1()
	/tmp/scratch/main.go:32 +0x25
created by main.main in goroutine 1
	/tmp/scratch/main.go:32 +0xc5

goroutine 22 [sync.Mutex.Lock]:
internal/sync.runtime_SemacquireMutex(0x0?, 0x0?, 0x0?)
	/usr/local/go/src/runtime/sema.go:95 +0x25
sync.(*Mutex).Lock(...)
	/usr/local/go/src/sync/mutex.go:46
main.main.func3()
	/tmp/scratch/main.go:38 +0x2d
created by main.main in goroutine 1
	/tmp/scratch/main.go:38 +0x1c8

goroutine 23 [select (no cases), 61 minutes, locked to thread]:
main.main.func4()
	/tmp/scratch/main.go:39 +0x14
created by main.main in goroutine 1
	/tmp/scratch/main.go:39 +0x1d4

goroutine 24 [chan receive]:
main.(*G[...]).wait(...)
	/tmp/scratch/main.go:24
example.com/x/y.Map[go.shape.int,go.shape.string]({0xc000010000, 0x2, 0x2}, _, ...)
	/home/u/go/pkg/mod/example.com/x@v1.0.0/y/y.go:7 +0x1f
created by main.main in goroutine 1
	/tmp/scratch/main.go:41 +0x256
`

func TestParseSample(t *testing.T) {
	gs := Parse(sampleDump)
	require.Len(t, gs, 5)
	want := []Goroutine{
		{ID: 1, State: "running", Frames: []Frame{{Function: "main.main", File: "/tmp/scratch/main.go", Line: 45, Offset: 0x2d3}}},
		{ID: 20, State: "select", Wait: 5 * time.Minute, Frames: []Frame{
			{Function: "database/sql.(*DB).conn", Args: "0x1b86d311e1a0, {0x4f1390, 0x5d92e0}, 0x1", File: "/usr/local/go/src/database/sql/sql.go", Line: 1369, Offset: 0x415},
			{Function: "database/sql.(*DB).Conn.func1", Args: "0x0?", File: "/usr/local/go/src/database/sql/sql.go", Line: 1950, Offset: 0x3a},
			{Function: "main.main.func1", File: "/tmp/scratch/main.go", Line: 32, Offset: 0x25},
		}, CreatedBy: Frame{Function: "main.main", File: "/tmp/scratch/main.go", Line: 32, Offset: 0xc5}, CreatorID: 1},
		{ID: 22, State: "sync.Mutex.Lock", Frames: []Frame{
			{Function: "internal/sync.runtime_SemacquireMutex", Args: "0x0?, 0x0?, 0x0?", File: "/usr/local/go/src/runtime/sema.go", Line: 95, Offset: 0x25},
			{Function: "sync.(*Mutex).Lock", Args: "...", File: "/usr/local/go/src/sync/mutex.go", Line: 46},
			{Function: "main.main.func3", File: "/tmp/scratch/main.go", Line: 38, Offset: 0x2d},
		}, CreatedBy: Frame{Function: "main.main", File: "/tmp/scratch/main.go", Line: 38, Offset: 0x1c8}, CreatorID: 1},
		{ID: 23, State: "select (no cases)", Wait: 61 * time.Minute, Locked: true, Frames: []Frame{
			{Function: "main.main.func4", File: "/tmp/scratch/main.go", Line: 39, Offset: 0x14},
		}, CreatedBy: Frame{Function: "main.main", File: "/tmp/scratch/main.go", Line: 39, Offset: 0x1d4}, CreatorID: 1},
		{ID: 24, State: "chan receive", Frames: []Frame{
			{Function: "main.(*G[...]).wait", Args: "...", File: "/tmp/scratch/main.go", Line: 24},
			{Function: "example.com/x/y.Map[go.shape.int,go.shape.string]", Args: "{0xc000010000, 0x2, 0x2}, _, ...", File: "/home/u/go/pkg/mod/example.com/x@v1.0.0/y/y.go", Line: 7, Offset: 0x1f},
		}, CreatedBy: Frame{Function: "main.main", File: "/tmp/scratch/main.go", Line: 41, Offset: 0x256}, CreatorID: 1},
	}
	for i := range want {
		assert.Equal(t, want[i], gs[i], "goroutine %d", i)
	}
	assert.True(t, gs[1].WaitingForConn())
	assert.False(t, gs[0].WaitingForConn())
	assert.False(t, gs[3].WaitingForConn())
	a, ok := gs[1].WaitingDB()
	assert.True(t, ok)
	assert.Equal(t, uintptr(0x1b86d311e1a0), a)
	assert.True(t, gs[2].Frames[1].Inlined())
	assert.False(t, gs[2].Frames[0].Inlined())
	f, ok := gs[4].UserFrame(nil)
	assert.True(t, ok)
	assert.Equal(t, "main.(*G[...]).wait", f.Function)
}

func TestHeaders(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Goroutine
		ok   bool
	}{
		{"goroutine 1 [running]:", Goroutine{ID: 1, State: "running"}, true},
		{"goroutine 7 [IO wait]:", Goroutine{ID: 7, State: "IO wait"}, true},
		{"goroutine 7 [IO wait, 1 minutes]:", Goroutine{ID: 7, State: "IO wait", Wait: time.Minute}, true},
		{"goroutine 7 [semacquire, 1440 minutes, locked to thread]:", Goroutine{ID: 7, State: "semacquire", Wait: 24 * time.Hour, Locked: true}, true},
		{"goroutine 9 [chan receive (nil chan)]:", Goroutine{ID: 9, State: "chan receive (nil chan)"}, true},
		{"goroutine 9 [runnable, locked to thread]:", Goroutine{ID: 9, State: "runnable", Locked: true}, true},
		{"goroutine 9 [chan send (leaked)]:", Goroutine{ID: 9, State: "chan send", Leaked: true}, true},
		{"goroutine 9 [select (scan)]:", Goroutine{ID: 9, State: "select"}, true},
		{"goroutine 9 [chan receive (durable), synctest bubble 3]:", Goroutine{ID: 9, State: "chan receive (durable)", Bubble: 3}, true},
		{"goroutine 9 [sleep, 2 minutes, synctest bubble 3]:", Goroutine{ID: 9, State: "sleep", Wait: 2 * time.Minute, Bubble: 3}, true},
		{`goroutine 9 [select labels:{"k": "v, ]: x"}]:`, Goroutine{ID: 9, State: "select", Labels: `labels:{"k": "v, ]: x"}`}, true},
		{"goroutine 42 gp=0xc000002380 m=0 mp=0x7a3f20 [running]:", Goroutine{ID: 42, State: "running"}, true},
		{"goroutine 42 gp=0xc000002380 m=nil [GC worker (idle)]:", Goroutine{ID: 42, State: "GC worker (idle)"}, true},
		{"goroutine 18446744073709551615 [running]:", Goroutine{ID: 1<<64 - 1, State: "running"}, true},
		{"goroutine 18446744073709551616 [running]:", Goroutine{}, false},
		{"goroutine x [running]:", Goroutine{}, false},
		{"goroutine 1 [running]", Goroutine{}, false},
		{"goroutine 1 running]:", Goroutine{}, false},
		{"goroutine 1 [select, x minutes]:", Goroutine{ID: 1, State: "select"}, true},
		{"goroutine 1 [select, -3 minutes]:", Goroutine{ID: 1, State: "select"}, true},
		{"goroutine 1 [select, 99999999999999999 minutes]:", Goroutine{ID: 1, State: "select"}, true},
	} {
		got, ok := parseHeader(tc.line)
		if assert.Equal(t, tc.ok, ok, "%q parses", tc.line) && ok {
			assert.Equal(t, tc.want, got, "%q", tc.line)
		}
	}
}

func TestLocations(t *testing.T) {
	for _, tc := range []struct {
		loc  string
		want Frame
	}{
		{"/a/b.go:12 +0x1f", Frame{File: "/a/b.go", Line: 12, Offset: 0x1f}},
		{"/a/b.go:12", Frame{File: "/a/b.go", Line: 12}},
		{"/a b/c d.go:12 +0x1f", Frame{File: "/a b/c d.go", Line: 12, Offset: 0x1f}},
		{"C:/a/b.go:7 +0x2", Frame{File: "C:/a/b.go", Line: 7, Offset: 2}},
		{"/a/b.go:12 +0x1f fp=0xc000 sp=0xbfff pc=0x4567", Frame{File: "/a/b.go", Line: 12, Offset: 0x1f, PC: 0x4567}},
		{"/src/c.c:99 pc=0x7f00", Frame{File: "/src/c.c", Line: 99, PC: 0x7f00}},
		{"pc=0x7f00", Frame{PC: 0x7f00}},
		{"?:0", Frame{File: "?", Line: 0}},
		{"nofile", Frame{File: "nofile"}},
		{"/a/b.go:x", Frame{File: "/a/b.go:x"}},
		{"/a/b.go:12 +0xzz", Frame{File: "/a/b.go", Line: 12}},
	} {
		p := parser{frames: []Frame{{}}, pendingIdx: 0}
		p.location(&Goroutine{}, tc.loc)
		assert.Equal(t, tc.want, p.frames[0], "%q", tc.loc)
	}
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		args  string
		words []string
		arg0  uint64
		ok0   bool
	}{
		{"0xc000123450, {0x4f1390, 0x5d92e0}, 0x1", []string{"0xc000123450", "{0x4f1390, 0x5d92e0}", "0x1"}, 0xc000123450, true},
		{"0xc000123450?, 0x1", []string{"0xc000123450?", "0x1"}, 0, false},
		{"{0x1, {0x2, 0x3}}, 0x4", []string{"{0x1, {0x2, 0x3}}", "0x4"}, 0, false},
		{"...", []string{"..."}, 0, false},
		{"_, 0x2", []string{"_", "0x2"}, 0, false},
		{"", nil, 0, false},
		{"0x1, ...", []string{"0x1", "..."}, 1, true},
		{"0xffffffffffffffffff", []string{"0xffffffffffffffffff"}, 0, false},
		{"}}, {", []string{"}}", "{"}, 0, false},
	} {
		f := Frame{Args: tc.args}
		assert.Equal(t, tc.words, f.ArgWords(), "%q: words", tc.args)
		v, ok := f.Arg(0)
		assert.Equal(t, tc.arg0, v, "%q: Arg(0)", tc.args)
		assert.Equal(t, tc.ok0, ok, "%q: Arg(0) found", tc.args)
	}
	v, ok := (Frame{Args: "0x1, {0x2}, 0x3"}).Arg(2)
	assert.True(t, ok, "Arg(2) found")
	assert.EqualValues(t, 3, v, "Arg(2)")
	_, ok = (Frame{Args: "0x1"}).Arg(5)
	assert.False(t, ok, "Arg past the end")
}

func TestPackage(t *testing.T) {
	for fn, want := range map[string]string{
		"database/sql.(*DB).conn":        "database/sql",
		"main.main.func1":                "main",
		"main.(*G[...]).wait":            "main",
		"github.com/a/b.(*T).M":          "github.com/a/b",
		"github.com/a/b.F[go.shape.int]": "github.com/a/b",
		"gopkg.in/yaml.v3.Unmarshal":     "gopkg.in/yaml",
		"panic":                          "",
		"":                               "",
		"runtime.gopark":                 "runtime",
		"net/http.(*conn).serve":         "net/http",
		"github.com/pgxleak/pgxleak.(*wconn).Ping": "github.com/pgxleak/pgxleak",
	} {
		assert.Equal(t, want, (Frame{Function: fn}).Package(), "Package(%q)", fn)
	}
	for fn, std := range map[string]bool{
		"database/sql.(*DB).conn": true, "runtime.gopark": true, "main.main": false,
		"github.com/a/b.F": false, "panic": true, "net/http.(*conn).serve": true,
	} {
		assert.Equal(t, std, IsStd(Frame{Function: fn}), "IsStd(%q)", fn)
	}
}

const elidedDump = `goroutine 5 [chan receive]:
main.rec(0x0)
	/x/main.go:10 +0x1
main.rec(0x1)
	/x/main.go:11 +0x2
...95 frames elided...
main.rec(0x63)
	/x/main.go:11 +0x2
main.start()
	/x/main.go:20 +0x3
created by main.main in goroutine 1
	/x/main.go:30 +0x4
[originating from goroutine 1]:
main.main(...)
	/x/main.go:30 +0x4
...additional frames elided...
created by main.init
	/x/main.go:40 +0x5
[originating from goroutine 0]:
main.first(...)
	/x/main.go:50

goroutine 6 [syscall, locked to thread]:
non-Go function at pc=0x7f0012345678
non-Go function at pc=0x7f0012345679
runtime.cgocall(0x4a2b60, 0xc000049f50)
	/usr/local/go/src/runtime/cgocall.go:167 +0x4b
C.sleep
	/src/x.c:12 pc=0x7f00aa
non-Go function
	pc=0x7f00bb
main._Cfunc_sleep(0x3c)
	_cgo_gotypes.go:60 +0x4b

goroutine 7 [running]:
	goroutine running on other thread; stack unavailable
created by main.main in goroutine 1
	/x/main.go:31 +0x6
`

func TestParseElidedAncestorsCgo(t *testing.T) {
	gs := Parse(elidedDump)
	require.Len(t, gs, 3)
	g := gs[0]
	if assert.Len(t, g.Frames, 4) {
		assert.Equal(t, "0x63", g.Frames[2].Args)
	}
	assert.Equal(t, 95, g.Elided)
	assert.Equal(t, 2, g.ElidedAt)
	assert.Equal(t, uint64(1), g.CreatorID)
	assert.Equal(t, 30, g.CreatedBy.Line)
	wantAnc := []Ancestor{
		{ID: 1, Frames: []Frame{{Function: "main.main", Args: "...", File: "/x/main.go", Line: 30, Offset: 4}}, Elided: true,
			CreatedBy: Frame{Function: "main.init", File: "/x/main.go", Line: 40, Offset: 5}},
		{ID: 0, Frames: []Frame{{Function: "main.first", Args: "...", File: "/x/main.go", Line: 50}}},
	}
	assert.Equal(t, wantAnc, g.Ancestors)
	c := gs[1]
	wantC := []Frame{
		{Function: "non-Go function", PC: 0x7f0012345678},
		{Function: "non-Go function", PC: 0x7f0012345679},
		{Function: "runtime.cgocall", Args: "0x4a2b60, 0xc000049f50", File: "/usr/local/go/src/runtime/cgocall.go", Line: 167, Offset: 0x4b},
		{Function: "C.sleep", File: "/src/x.c", Line: 12, PC: 0x7f00aa},
		{Function: "non-Go function", PC: 0x7f00bb},
		{Function: "main._Cfunc_sleep", Args: "0x3c", File: "_cgo_gotypes.go", Line: 60, Offset: 0x4b},
	}
	assert.True(t, c.Locked)
	assert.Equal(t, "syscall", c.State)
	assert.Equal(t, wantC, c.Frames)
	o := gs[2]
	assert.True(t, o.StackUnavailable, "other thread: %+v", o)
	assert.Empty(t, o.Frames)
	assert.Equal(t, 31, o.CreatedBy.Line)
}

func TestParseJunk(t *testing.T) {
	dump := "panic: boom\n\n[signal SIGSEGV]\n" + strings.ReplaceAll(sampleDump, "+0x2d3\n", "+0x2d3\nsome unknown line here\n\tunparsable\n") + "\nexit status 2\n"
	gs := Parse(dump)
	require.Len(t, gs, 5)
	assert.Equal(t, 45, gs[0].Frames[0].Line)
	for _, g := range gs {
		assert.False(t, g.Truncated, "goroutine %d truncated", g.ID)
	}
}

// TestTruncatedPrefixes parses every prefix of the sample dumps: no
// panic, goroutines are a prefix of the full parse, every complete
// goroutine equals its full parse, and a cut line is never half-parsed.
func TestTruncatedPrefixes(t *testing.T) {
	for _, dump := range []string{sampleDump, elidedDump} {
		full := Parse(dump)
		for n := 0; n < len(dump); n++ {
			gs := Parse(dump[:n])
			require.LessOrEqual(t, len(gs), len(full), "prefix %d: goroutines", n)
			for i, g := range gs {
				f := full[i]
				require.Equal(t, f.ID, g.ID, "prefix %d: goroutine %d", n, i)
				require.Equal(t, f.State, g.State, "prefix %d: goroutine %d", n, i)
				last := i == len(gs)-1
				if last {
					require.Equal(t, n > 0 && dump[n-1] != '\n', g.Truncated, "prefix %d: Truncated", n)
				}
				require.LessOrEqual(t, len(g.Frames), len(f.Frames), "prefix %d: frames", n)
				for j, fr := range g.Frames {
					want := f.Frames[j]
					if last && j == len(g.Frames)-1 && fr.File == "" {
						// A frame whose location line was cut has no location yet.
						require.Equal(t, want.Function, fr.Function, "prefix %d: goroutine %d frame %d", n, g.ID, j)
						require.Equal(t, want.Args, fr.Args, "prefix %d: goroutine %d frame %d", n, g.ID, j)
						continue
					}
					require.Equal(t, want, fr, "prefix %d: goroutine %d frame %d", n, g.ID, j)
				}
				if !last {
					require.Equal(t, f, g, "prefix %d: goroutine %d", n, g.ID)
				}
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sampleDump)
	f.Add(elidedDump)
	f.Add("goroutine 1 [running]:\n\t\n(\n)\n(x)\ncreated by \n\t:\n[originating from goroutine ]:\n...x frames elided...\n")
	f.Add("goroutine 1 [, ]:\nf(\n\t:-1 +0x\n")
	f.Fuzz(func(t *testing.T, dump string) {
		for _, g := range Parse(dump) {
			_ = g.WaitingForConn()
			_, _ = g.WaitingDB()
			_, _ = g.UserFrame(nil)
			for _, fr := range g.Frames {
				_ = fr.ArgWords()
				_, _ = fr.Arg(1)
				_ = fr.Package()
				_ = fr.String()
				require.GreaterOrEqual(t, fr.Line, 0, "line in %+v", fr)
			}
			require.LessOrEqual(t, g.ElidedAt, len(g.Frames), "ElidedAt")
		}
	})
}

// A crash dump under GOTRACEBACK=system: runtime.Stack always prints at
// level 1, but a crash's output, pasted in, looks like this.
const systemDump = `goroutine 8 gp=0xc000007a40 m=nil [select, 3 minutes]:
runtime.gopark(0xc00004e738?, 0x2?, 0x0?, 0x0?, 0xc00004e6d4?)
	/usr/local/go/src/runtime/proc.go:460 +0xce fp=0xc00004e588 sp=0xc00004e568 pc=0x47378e
runtime.selectgo(0xc00004e738, 0xc00004e6d0, 0x0?, 0x0, 0x0?, 0x1)
	/usr/local/go/src/runtime/select.go:351 +0x837 fp=0xc00004e6b0 sp=0xc00004e588 pc=0x44f8b7
database/sql.(*DB).conn(0xc0000b4000, {0x5517b0, 0x665880}, 0x1)
	/usr/local/go/src/database/sql/sql.go:1369 +0x725 fp=0xc00004e7b0 sp=0xc00004e6b0 pc=0x4e1b45
main.handler()
	/app/main.go:50 +0x1d fp=0xc00004e7e0 sp=0xc00004e7b0 pc=0x4e9b1d
runtime.goexit({})
	/usr/local/go/src/runtime/asm_amd64.s:1771 +0x1 fp=0xc00004e7e8 sp=0xc00004e7e0 pc=0x47a9a1
created by main.main in goroutine 1
	/app/main.go:60 +0x25

goroutine 9 gp=0xc000007c00 m=nil [sync.Mutex.Lock]:
runtime.gopark(0x0?, 0x0?, 0x0?, 0x0?, 0x0?)
	/usr/local/go/src/runtime/proc.go:460 +0xce fp=0xc00004e588 sp=0xc00004e568 pc=0x47378e
database/sql.(*DB).conn(0xc0000b4000, {0x5517b0, 0x665880}, 0x1)
	/usr/local/go/src/database/sql/sql.go:1317 +0x25
`

func TestParseSystem(t *testing.T) {
	gs := Parse(systemDump)
	require.Len(t, gs, 2)
	g := gs[0]
	assert.Equal(t, uint64(8), g.ID)
	assert.Equal(t, "select", g.State)
	assert.Equal(t, 3*time.Minute, g.Wait)
	require.Len(t, g.Frames, 5)
	assert.Equal(t, uint64(0x47378e), g.Frames[0].PC)
	a, ok := g.WaitingDB()
	assert.True(t, ok, "runtime frames come first")
	assert.Equal(t, uintptr(0xc0000b4000), a, "runtime frames come first")
	u, ok := g.UserFrame(nil)
	assert.True(t, ok)
	assert.Equal(t, "main.handler", u.Function)
	assert.Equal(t, 50, u.Line)
	assert.False(t, gs[1].WaitingForConn(), "a goroutine on db.mu is not waiting for a connection")
}
