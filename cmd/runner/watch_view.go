package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/pkg/lock"
)

// The terminal view: "pool status --watch" and "pool list --watch" redraw
// their output every --interval, for an operator on a server without a
// browser; and the filters of "pool list".

// watchFlags are --watch, --interval and (for lists) --limit.
type watchFlags struct {
	on    bool
	every time.Duration
	limit int
}

func (f *watchFlags) add(cmd *cobra.Command, limit int) {
	cmd.Flags().BoolVarP(&f.on, "watch", "w", false, "redraw every --interval until interrupted")
	cmd.Flags().DurationVar(&f.every, "interval", 2*time.Second, "time between redraws with --watch (at least 100ms)")
	if limit > 0 {
		cmd.Flags().IntVar(&f.limit, "limit", limit, "rows shown with --watch")
	}
}

// watch renders the view every interval until ctx ends (SIGINT, SIGTERM),
// then returns nil. On a terminal each frame replaces the last; otherwise
// frames follow each other, each headed by its time.
func (a *app) watch(ctx context.Context, every time.Duration, render func(io.Writer) error) error {
	every = max(every, 100*time.Millisecond)
	term := isTerminal(a.stdout)
	t := time.NewTicker(every)
	defer t.Stop()
	var frame bytes.Buffer
	for {
		frame.Reset()
		if term {
			frame.WriteString("\x1b[H\x1b[2J") // home, clear screen
		}
		fmt.Fprintf(&frame, "%s, every %v (Ctrl-C to stop)\n\n", time.Now().Format(time.TimeOnly), every)
		if err := render(&frame); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !term {
			frame.WriteString("\n")
		}
		if _, err := a.stdout.Write(frame.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// listFilter keeps the items of "pool list" and of the dashboard's
// searches in some states, or with names matching a glob, or leased by one
// runner's workers.
type listFilter struct {
	states []string
	match  string
	// runner is a runner's ID: its workers' leases are owned by
	// "<runner>/w<N>".
	runner string
}

// listStates are the statuses describe gives.
var listStates = []string{"free", "leased", "cooldown", "quarantine", "locked", "error"}

func (f *listFilter) check() error {
	var want []string
	for _, s := range f.states {
		for part := range strings.SplitSeq(s, ",") {
			if !slices.Contains(listStates, part) {
				return fmt.Errorf("%q is not a state: want one of %s", part, strings.Join(listStates, ", "))
			}
			want = append(want, part)
		}
	}
	f.states = want
	return nil
}

func (f listFilter) keeps(in itemInfo) bool {
	if len(f.states) > 0 && !slices.Contains(f.states, in.Status) {
		return false
	}
	if f.runner == "" {
		return true
	}
	worker, ok := strings.CutPrefix(in.Owner, f.runner+"/w")
	return ok && in.Status == "leased" && worker != "" && strings.Trim(worker, "0123456789") == ""
}

// items yields the pool's members, only those matching f.match when set
// (SSCAN MATCH: Redis filters, the whole pool is still walked).
func (f listFilter) items(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool) iter.Seq2[string, error] {
	if f.match == "" {
		return pool.Items(ctx)
	}
	return func(yield func(string, error) bool) {
		it := client.SScan(ctx, pool.Keys().Members(), 0, f.match, chunk).Iterator()
		for it.Next(ctx) {
			if !yield(it.Val(), nil) {
				return
			}
		}
		if err := it.Err(); err != nil {
			yield("", err)
		}
	}
}
