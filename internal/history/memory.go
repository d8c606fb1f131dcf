package history

import (
	"container/heap"
	"sync"
	"time"

	"github.com/lockpool/lockpool/internal/keyed"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Log is the in-memory twin of a pool's history keys, kept beside a memory
// pool under the name of its hist:last key (with keyspace.Memory's base):
// pkg/allocator's memory Lease.Next writes it in its step as next.lua
// does, and pkg/worker's MemoryStore writes and reads it. It drops every
// entry whose retention ended at each write (the Redis keys drop up to 8
// per write; readers see the same either way, see Record.Visible). It
// is safe for concurrent use; its mutex is taken last, after any other
// lock of its callers.
type Log struct {
	mu    sync.Mutex
	last  map[string]Record
	tails map[string]Record // Entry.Stderr holds the tail
	// byExpiry orders the items by when their records' retention ends
	// (hist:expiry), with stale heap entries of rewritten items skipped
	// and compacted.
	byExpiry expiryHeap
}

// Of returns the log kept beside pool under key, made empty on first use.
func Of(pool *lock.MemoryLockPool, key string) *Log {
	return keyed.Of(pool, "history", key, func() *Log {
		return &Log{last: map[string]Record{}, tails: map[string]Record{}}
	})
}

// Write records e for item as history(...) does, at now: unless the log
// holds a record of item with a higher token.
func (l *Log) Write(item string, token int64, e Entry, now time.Time) {
	_, tail, retainMs := e.Args()
	e.Error, e.Stderr, e.Runner = Head(e.Error, MaxError), "", Head(e.Runner, MaxRunner)
	e.Retain = time.Duration(retainMs) * time.Millisecond
	now = time.UnixMilli(now.UnixMilli())
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.last[item]; ok && old.Token > token {
		return
	}
	l.last[item] = Record{Entry: e, At: now, Token: token}
	heap.Push(&l.byExpiry, expiryEntry{item: item, expires: now.Add(e.Retain)})
	if tail != "" {
		l.tails[item] = Record{Entry: Entry{Stderr: tail, Retain: e.Retain}, At: now, Token: token}
	}
	for l.byExpiry.Len() > 0 && !l.byExpiry[0].expires.After(now) {
		top := heap.Pop(&l.byExpiry).(expiryEntry)
		if r, ok := l.last[top.item]; ok && !r.Visible(now) {
			delete(l.last, top.item)
		}
		if t, ok := l.tails[top.item]; ok && !t.Visible(now) {
			delete(l.tails, top.item)
		}
	}
	if l.byExpiry.Len() > 2*len(l.last)+64 {
		l.compact()
	}
}

// compact rebuilds byExpiry from last, dropping stale entries.
func (l *Log) compact() {
	l.byExpiry = l.byExpiry[:0]
	for item, r := range l.last {
		l.byExpiry = append(l.byExpiry, expiryEntry{item: item, expires: r.At.Add(r.Retain)})
	}
	heap.Init(&l.byExpiry)
}

// Get returns item's last record and the tail of its last failure (with
// Entry.Stderr set; zero when none), each only while visible at now.
func (l *Log) Get(item string, now time.Time) (last Record, found bool, tail Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, found = l.last[item]
	if found && !last.Visible(now) {
		last, found = Record{}, false
	}
	if t, ok := l.tails[item]; ok && t.Visible(now) {
		tail = t
	}
	return last, found, tail
}

// Len is how many records the log holds, stale ones included.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.last)
}

type expiryEntry struct {
	item    string
	expires time.Time
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
