package pgxleak_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestCloseReportsStillOut(t *testing.T) {
	rec := &leaktest.Recorder{}
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, rec.Option(), pgxleak.WithLogger(nil))
	require.NoError(t, err)
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	db.Close()
	rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut && isCulprit(line)(l) })
	c.Close()
}
