package allocator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lockpool/lockpool/internal/epoch"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Sentinel errors. Returned errors wrap them with the operation and item.
var (
	// ErrNoFreeItem: no item is available. Acquire joins it with ctx.Err()
	// when its context ends the wait.
	ErrNoFreeItem = errors.New("allocator: no free item")
	// ErrLeaseLost: the lease expired, or someone else holds the item.
	ErrLeaseLost = errors.New("allocator: lease lost")
	// ErrLeaseReleased: the lease was already released by its holder.
	ErrLeaseReleased = errors.New("allocator: lease already released")
	// ErrInvalidOwner: an owner is empty, longer than MaxOwnerLen, or
	// contains a NUL byte.
	ErrInvalidOwner = errors.New("allocator: invalid owner")
	// ErrInvalidConfig: a constructor or call was given a bad setting, such
	// as a TTL below one millisecond.
	ErrInvalidConfig = errors.New("allocator: invalid config")
	// ErrClosed: the allocator was closed.
	ErrClosed = errors.New("allocator: closed")
	// ErrFromEmpty: Lease.Next drew from AcquireOptions.From and found it
	// empty. It comes joined with ErrNoFreeItem.
	ErrFromEmpty = errors.New("allocator: the From set is empty")
	// ErrQuietPeriod: no item is granted because the Redis dataset had a
	// discontinuity (a restart, failover or restore) and leases granted
	// before it may still be running; see the package comment. TryAcquire
	// joins it with ErrNoFreeItem; Acquire waits.
	ErrQuietPeriod = errors.New("allocator: quiet period after a redis dataset discontinuity")
	// ErrNotReplicated: a grant or refresh was not acknowledged by
	// Config.MinReplicasAcked replicas in time. A grant is then undone; a
	// refresh does not count as confirmed.
	ErrNotReplicated = errors.New("allocator: not acknowledged by enough replicas")
	// ErrUnsafeServer: the Redis server's settings break the one-holder
	// promise (an eviction policy with maxmemory set), or the deployment
	// cannot hold a pool (a cluster without a hash tag in the prefix, or a
	// cluster node given to a non-cluster client). See CheckServer.
	ErrUnsafeServer = errors.New("allocator: unsafe redis server")
	// ErrPaused: the pool is paused (Allocator.Pause): no allocator of the
	// pool, in any process, grants a lease until Resume. TryAcquire and
	// Lease.Next join it with ErrNoFreeItem; Acquire waits.
	ErrPaused = errors.New("allocator: pool paused")
	// ErrNotHeldBack: Unquarantine found the item neither quarantined nor
	// cooling down.
	ErrNotHeldBack = errors.New("allocator: item not quarantined or cooling down")
	// ErrNotLeased: Cancel found no lease on the item (it is free, held
	// back, or locked by a lock the allocator did not grant).
	ErrNotLeased = errors.New("allocator: item not leased")
)

// MaxOwnerLen is the longest owner, in bytes.
const MaxOwnerLen = 1024

// QuarantineValue is the lock value of a quarantined item: held back from
// everyone (Quarantine, Lease.Quarantine, EndOptions.Quarantine).
// CooldownValue is the lock value of an item resting after a run: a
// worker's cooldown or retry backoff (Lease.Cooldown, EndOptions.Hold).
// Lease values end in "#<token>" and tokens start above a million, so none
// equals either; pkg/lock and Python users see both as ordinary locks.
const (
	QuarantineValue = "quarantine#0"
	CooldownValue   = "cooldown#0"
)

const (
	quarantineMarker = QuarantineValue
	cooldownMarker   = CooldownValue
)

// holdMarker is the lock value of a hold: a quarantine's or a cooldown's.
func holdMarker(quarantine bool) string {
	if quarantine {
		return quarantineMarker
	}
	return cooldownMarker
}

// Config configures an Allocator. Zero values mean the defaults.
type Config struct {
	// LeaseTTL is the lease time to live when AcquireOptions.TTL is zero.
	// Default 30s; at least 1ms.
	LeaseTTL time.Duration
	// WakeWaiters is how many blocked Acquire calls a release wakes.
	// Default 1.
	WakeWaiters int
	// SyncInterval is how often the allocator checks the pool's member set
	// for items added or removed by other clients. Default 250ms.
	SyncInterval time.Duration
	// FullSyncInterval is how often it sweeps the whole member set even
	// when counts agree (an equal number of items added and removed).
	// Default 30s.
	FullSyncInterval time.Duration
	// HandoffWindow is how long a released item is kept for the waiter
	// the release woke, so callers looping straight back into Acquire or
	// TryAcquire cannot starve blocked waiters. After it the item is free
	// for anyone (the waiter may have gone). Default 100ms.
	HandoffWindow time.Duration
	// MaxWait bounds one sleep of a blocked Acquire, a safety net for a
	// wake-up lost with a dropped connection. Default 5s.
	MaxWait time.Duration
	// AllowEviction accepts a Redis that may evict keys (maxmemory set with
	// a policy other than noeviction). Evicted lock keys let two holders
	// run at once, so NewRedis refuses such a server unless this is set.
	// Default false.
	AllowEviction bool
	// MinReplicasAcked, when above zero, makes every grant and refresh wait
	// (WAIT) until that many replicas acknowledged it: a failover to an
	// acknowledging replica then loses no confirmed lease, and holders keep
	// running across it. A grant not acknowledged within ReplicaAckTimeout
	// is undone and Acquire reports ErrNotReplicated; such a refresh does
	// not count as confirmed. Default 0: no wait.
	MinReplicasAcked int
	// ReplicaAckTimeout bounds that wait. Default 1s.
	ReplicaAckTimeout time.Duration
	// OnDiscontinuity, when set, is called when this allocator first sees
	// that the Redis dataset had a discontinuity (a restart, failover or
	// restore, noticed by any allocator on the pool): from then until
	// Dataset.QuietUntil nothing is granted. It must not block.
	OnDiscontinuity func(Dataset)
}

// Dataset is what the allocator knows of the Redis dataset its pool lives
// in. The memory backend has one generation that never ends.
type Dataset struct {
	// Gen is the dataset generation: 1 for a new pool, bumped at every
	// discontinuity.
	Gen int64
	// Since is when this generation began (the discontinuity was
	// noticed), by the server's clock.
	Since time.Time
	// QuietUntil is until when, by the server's clock, no item is granted
	// after the discontinuity that began this generation; zero when none.
	QuietUntil time.Time
}

func datasetOf(s epoch.State) Dataset {
	return Dataset{Gen: s.Gen, Since: s.Since, QuietUntil: s.QuietUntil}
}

// WithDefaults returns c with every zero field set to its documented
// default. NewRedis and NewMemory apply it.
func (c Config) WithDefaults() Config {
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 30*time.Second)
	c.WakeWaiters = cmp.Or(c.WakeWaiters, 1)
	c.SyncInterval = cmp.Or(c.SyncInterval, 250*time.Millisecond)
	c.FullSyncInterval = cmp.Or(c.FullSyncInterval, 30*time.Second)
	c.MaxWait = cmp.Or(c.MaxWait, 5*time.Second)
	c.HandoffWindow = cmp.Or(c.HandoffWindow, 100*time.Millisecond)
	c.ReplicaAckTimeout = cmp.Or(c.ReplicaAckTimeout, time.Second)
	return c
}

// Validate reports every bad setting of c, with the defaults filled in,
// as *FieldError values wrapping ErrInvalidConfig, joined with
// errors.Join (see FieldErrors). NewRedis and NewMemory call it.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p []error
	bad := func(field, format string, args ...any) {
		p = append(p, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrInvalidConfig})
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"LeaseTTL", c.LeaseTTL}, {"SyncInterval", c.SyncInterval}, {"HandoffWindow", c.HandoffWindow},
		{"MaxWait", c.MaxWait}, {"ReplicaAckTimeout", c.ReplicaAckTimeout},
	} {
		if d.v < time.Millisecond {
			bad(d.field, "must be at least 1ms, got %q", d.v.String())
		}
	}
	if c.WakeWaiters < 1 || c.WakeWaiters > 1000 {
		bad("WakeWaiters", "must be between 1 and 1000, got %d", c.WakeWaiters)
	}
	if c.FullSyncInterval < c.SyncInterval {
		bad("FullSyncInterval", "must be at least SyncInterval (%v), got %q", c.SyncInterval, c.FullSyncInterval.String())
	}
	if c.MinReplicasAcked < 0 || c.MinReplicasAcked > 100 {
		bad("MinReplicasAcked", "must be between 0 and 100, got %d", c.MinReplicasAcked)
	}
	return errors.Join(p...)
}

// AcquireOptions tune one Acquire or TryAcquire. The zero value asks for any
// free item with the configured LeaseTTL.
type AcquireOptions struct {
	// TTL of the lease; zero means Config.LeaseTTL.
	TTL time.Duration
	// Prefer names an item to take if it is free.
	Prefer string
	// Binding names an affinity: the binding gets the item it had last time
	// when that item is free, and remembers the item it gets now.
	Binding string
	// Exact leases only the item named by Prefer: TryAcquire returns
	// ErrNoFreeItem when it is not free, and Acquire waits for it (polling
	// when it may be free, at least every Config.MaxWait, as releases of a
	// named item wake no one in particular).
	Exact bool
	// From, for Lease.Next only, names a SET beside the pool (a key of
	// Keys(), "<base>|..."; pkg/worker passes a batch's todo SET) whose
	// members are the only candidates after Prefer and Binding: up to 16
	// drawn at random, the first free one granted, as an Exact grant of
	// each would. A miss is ErrNoFreeItem, joined with ErrFromEmpty when
	// the SET is empty. Default "": any free item of the pool.
	From string
	// Failures, for Lease.Next only, names the HASH of per-item failure
	// counts (a key of Keys()) that the step's EndOptions.Count changes
	// and the granted lease's Failures reads: pkg/worker passes a batch's
	// failures HASH. Default "": Keys().Failures(), loop mode's.
	Failures string
}

// grant is what a store hands back for a successful acquire.
type grant struct {
	item     string
	token    int64
	deadline time.Time // server time
	gen      int64     // dataset generation it was granted in
}

// miss is what a store hands back when nothing was free: when an item may
// next become available, by the server's clock (zero when unknown), the
// server's time then, and whether the index lags the pool's members.
// quiet is set (Gen > 0) when nothing was granted because of the quiet
// period after a discontinuity; next is then its end.
type miss struct {
	next, now time.Time
	behind    bool
	quiet     epoch.State
	// paused: nothing was granted because the pool is paused.
	paused bool
}

// verdict is what a refresh or release found of one lease.
type verdict int8

const (
	verdictGone  verdict = -1 // the lock key is gone
	verdictTaken verdict = 0  // the lock key holds another value
	verdictHeld  verdict = 1  // the lease was current (and is now extended or ended)
)

// report is what a refresh or release learned of the dataset: its epoch
// state (zero Gen when not checked) and the server's evicted_keys (-1 when
// unknown).
type report struct {
	state   epoch.State
	evicted int64
}

// nextResult is what a next step did: how it found the ended lease (and
// what it learned of the dataset when the lease was not current), and the
// grant or miss that followed, with the granted item's failure count.
type nextResult struct {
	ended    verdict
	rep      report
	g        grant
	m        miss
	granted  bool
	failures int
	// fromEmpty: nothing was granted and the From SET was empty.
	fromEmpty bool
	// grantErr is set when a grant was made but not acknowledged by
	// enough replicas (Config.MinReplicasAcked), and so undone.
	grantErr error
}

// retryNow reports whether looking again at once may succeed: items were
// due but the bounded step only cleaned stale index entries.
func (m miss) retryNow() bool { return !m.next.IsZero() && !m.next.After(m.now) }

// maxSteps bounds the immediate retries of one acquire attempt.
const maxSteps = 100

// store is one backend: Redis or memory. Methods get validated input.
type store interface {
	// acquire takes a free item, or registers waiter (when not "") to be
	// woken by the next release and reports a miss.
	// With exact it tries only prefer and registers no waiter.
	acquire(ctx context.Context, owner string, ttl time.Duration, prefer, binding, waiter string, exact bool) (grant, miss, bool, error)
	// refresh extends each lease that is still current; v[i] reports what
	// it found of leases[i].
	refresh(ctx context.Context, leases []*Lease, ttl time.Duration) (now time.Time, v []verdict, rep report, err error)
	// release ends a current lease: the item is free at once (hold == 0)
	// or held back for hold under the lock value marker (a quarantine's or
	// a cooldown's). It reports what it found of the lease.
	release(ctx context.Context, l *Lease, hold time.Duration, marker string) (verdict, report, error)
	// next ends l as release does, applying end.Count to its item's
	// failure count when the lease is current, then takes a free item as
	// acquire does without a waiter (with exact, only prefer), in one
	// step; with opts.From, candidates are drawn from that SET, and
	// opts.Failures (never "" here) is the count HASH.
	next(ctx context.Context, l *Lease, end EndOptions, owner string, ttl time.Duration, opts AcquireOptions) (nextResult, error)
	// names is the keyspace the pool's state is named by.
	names() keyspace.Pool
	// quarantine holds item for d whoever holds it now.
	quarantine(ctx context.Context, item string, d time.Duration) error
	// sync runs one bounded step of reconciling the index with the pool;
	// it reports whether a sweep is still running.
	sync(ctx context.Context, full bool) (bool, error)
	// pause pauses (on) or resumes the pool for every allocator of it,
	// and returns since when it is paused (zero after a resume).
	pause(ctx context.Context, on bool) (time.Time, error)
	// paused returns since when the pool is paused (zero: it is not).
	paused(ctx context.Context) (time.Time, error)
	// intervene runs an operator's action on item (intervene.lua) and
	// returns its outcome: intervened, nothingTo or heldByLock.
	intervene(ctx context.Context, op intervention, item string) (int, error)
	// onCancel sets the function told of every lease of the pool an
	// operator cancels, in any process: its item and token.
	onCancel(f func(item string, token int64))
	// waiter makes a wake-up registration; done unregisters it.
	waiter() (id string, wake <-chan struct{}, done func())
	close() error
}

// Allocator hands out free items of one lock pool as fenced leases. Create
// it with NewRedis or NewMemory and Close it when done; it is safe for
// concurrent use.
type Allocator struct {
	cfg    Config
	store  store
	epochs *epoch.Tracker
	// evicted is the highest evicted_keys the server reported (-1: not
	// known yet), in dataset generation evictedGen (0: before any script).
	evictMu    sync.Mutex
	evicted    int64
	evictedGen int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closed     chan struct{}
	once       sync.Once
	// keeper refreshes the leases of every KeepAlive together.
	keeper keeper
}

// refreshChunk is how many leases one refresh script takes at most.
const refreshChunk = 1000

// refreshBatch is one refresh script for leases (at most refreshChunk), all
// of TTL ttl: each still current is extended, each found lost is marked
// lost. It returns, per lease, nil or why it was lost; or the call's error.
func (a *Allocator) refreshBatch(ctx context.Context, ttl time.Duration, leases []*Lease) ([]error, error) {
	sent := time.Now()
	now, vs, rep, err := a.store.refresh(ctx, leases, ttl)
	if err != nil {
		return nil, err
	}
	lost := make([]error, len(leases))
	for i, l := range leases {
		if vs[i] == verdictHeld {
			l.extended(now.Add(ttl), sent, rep.state.Gen)
			continue
		}
		lost[i] = a.lostError(l, vs[i], rep)
		l.markLost(lost[i])
	}
	return lost, nil
}

// newTracker follows the dataset for one allocator and reports its
// discontinuities to cfg.OnDiscontinuity.
func newTracker(cfg Config) *epoch.Tracker {
	return epoch.NewTracker(cfg.LeaseTTL, func(old, cur epoch.State) {
		// A process that starts on a pool sees its current generation
		// first: news only when its quiet period may still run.
		if cfg.OnDiscontinuity != nil && (old.Gen > 0 || cur.QuietUntil.After(time.Now())) {
			cfg.OnDiscontinuity(datasetOf(cur))
		}
	})
}

func newAllocator(cfg Config, s store, t *epoch.Tracker) *Allocator {
	ctx, cancel := context.WithCancel(context.Background())
	a := &Allocator{cfg: cfg, store: s, epochs: t, cancel: cancel, closed: make(chan struct{}), evicted: -1}
	s.onCancel(a.cancelled)
	a.wg.Go(func() { a.syncLoop(ctx) })
	return a
}

// Close stops the background sync and releases the allocator's
// connections. It does not release leases.
func (a *Allocator) Close() error {
	var err error
	a.once.Do(func() {
		close(a.closed)
		a.cancel()
		a.wg.Wait()
		err = a.store.close()
	})
	return err
}

// syncLoop keeps the index in step with the member set: a step every
// SyncInterval, back to back while a sweep runs, and a full sweep every
// FullSyncInterval.
func (a *Allocator) syncLoop(ctx context.Context) {
	nextFull := time.Now().Add(a.cfg.FullSyncInterval)
	for {
		full := time.Now().After(nextFull)
		if full {
			nextFull = time.Now().Add(a.cfg.FullSyncInterval)
		}
		running, err := a.store.sync(ctx, full)
		wait := a.cfg.SyncInterval
		if err == nil && running {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Dataset returns what this allocator last learned of the Redis dataset
// its pool lives in: the generation, when it began, and the quiet period
// after the discontinuity that began it.
func (a *Allocator) Dataset() Dataset { return datasetOf(a.epochs.State()) }

// Sync runs the index reconciliation to completion now. Items added to the
// pool by other clients are otherwise picked up within SyncInterval (plus
// the sweep's time for large pools).
func (a *Allocator) Sync(ctx context.Context) error {
	full := true
	for {
		running, err := a.store.sync(ctx, full)
		if err != nil {
			return fmt.Errorf("allocator: Sync: %w", err)
		}
		if !running {
			return nil
		}
		full = false
	}
}

func (a *Allocator) checkAcquire(op, owner string, opts AcquireOptions) (time.Duration, error) {
	switch {
	case owner == "":
		return 0, fmt.Errorf("allocator: %s: %w: empty", op, ErrInvalidOwner)
	case len(owner) > MaxOwnerLen:
		return 0, fmt.Errorf("allocator: %s: %w: %d bytes, limit %d", op, ErrInvalidOwner, len(owner), MaxOwnerLen)
	case strings.IndexByte(owner, 0) >= 0:
		return 0, fmt.Errorf("allocator: %s %q: %w: contains a NUL byte", op, owner, ErrInvalidOwner)
	}
	if opts.Exact && opts.Prefer == "" {
		return 0, fmt.Errorf("allocator: %s: %w: Exact needs Prefer", op, ErrInvalidConfig)
	}
	if (opts.From != "" || opts.Failures != "") && op != "Next" {
		return 0, fmt.Errorf("allocator: %s: %w: From and Failures are options of Lease.Next", op, ErrInvalidConfig)
	}
	for _, key := range []string{opts.From, opts.Failures} {
		if base := a.store.names().Base() + "|"; key != "" && (!strings.HasPrefix(key, base) || len(key) == len(base)) {
			return 0, fmt.Errorf("allocator: %s: %w: key %q is not the pool's (%q...)", op, ErrInvalidConfig, key, base)
		}
	}
	for _, name := range []string{opts.Prefer, opts.Binding} {
		if name != "" && (len(name) > lock.MaxKeyLen || strings.IndexByte(name, 0) >= 0) {
			return 0, fmt.Errorf("allocator: %s: %w: item or binding name %q", op, lock.ErrInvalidKey, name)
		}
	}
	ttl := cmp.Or(opts.TTL, a.cfg.LeaseTTL)
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("allocator: %s: %w: TTL %v (want >= 1ms)", op, ErrInvalidConfig, ttl)
	}
	select {
	case <-a.closed:
		return 0, fmt.Errorf("allocator: %s: %w", op, ErrClosed)
	default:
	}
	return ttl, nil
}

// Keys is the keyspace the allocator's pool is named by (pkg/keyspace):
// where AcquireOptions.From and Failures name their keys. For the memory
// backend it is keyspace.Memory().
func (a *Allocator) Keys() keyspace.Pool { return a.store.names() }

// TryAcquire leases a free item to owner at once, or returns ErrNoFreeItem.
// The item that has been available longest goes first, after the item named
// by opts.Prefer or opts.Binding when that one is free.
func (a *Allocator) TryAcquire(ctx context.Context, owner string, opts AcquireOptions) (*Lease, error) {
	ttl, err := a.checkAcquire("TryAcquire", owner, opts)
	if err != nil {
		return nil, err
	}
	for range maxSteps {
		sent := time.Now()
		g, m, ok, err := a.store.acquire(ctx, owner, ttl, opts.Prefer, opts.Binding, "", opts.Exact)
		switch {
		case err != nil:
			return nil, fmt.Errorf("allocator: TryAcquire: %w", err)
		case ok:
			return a.newLease(owner, ttl, g, sent), nil
		case m.quiet.Gen > 0:
			return nil, fmt.Errorf("allocator: TryAcquire: %w", a.quietErr(m.quiet))
		case m.paused:
			return nil, fmt.Errorf("allocator: TryAcquire: %w (%w)", ErrNoFreeItem, ErrPaused)
		case opts.Exact:
			return nil, fmt.Errorf("allocator: TryAcquire %q: %w", opts.Prefer, ErrNoFreeItem)
		case m.behind:
			if _, err := a.store.sync(ctx, false); err != nil {
				return nil, fmt.Errorf("allocator: TryAcquire: %w", err)
			}
		case !m.retryNow():
			return nil, fmt.Errorf("allocator: TryAcquire: %w", ErrNoFreeItem)
		}
	}
	return nil, fmt.Errorf("allocator: TryAcquire: %w", ErrNoFreeItem)
}

// Acquire leases a free item to owner, waiting until one is free or ctx
// ends; then the error joins ErrNoFreeItem with ctx.Err(). A release wakes
// a bounded number of waiters (Config.WakeWaiters), oldest first; otherwise
// a waiter sleeps until the earliest lease deadline the server reported.
func (a *Allocator) Acquire(ctx context.Context, owner string, opts AcquireOptions) (*Lease, error) {
	ttl, err := a.checkAcquire("Acquire", owner, opts)
	if err != nil {
		return nil, err
	}
	id, wake, done := a.store.waiter()
	defer done()
	if opts.Exact {
		id = "" // a hand-off is for any item, not this one
	}
	for {
		sent := time.Now()
		g, m, ok, err := a.store.acquire(ctx, owner, ttl, opts.Prefer, opts.Binding, id, opts.Exact)
		switch {
		case err != nil && ended(ctx) != nil:
			return nil, fmt.Errorf("allocator: Acquire: %w", errors.Join(ErrNoFreeItem, ended(ctx)))
		case err != nil:
			return nil, fmt.Errorf("allocator: Acquire: %w", err)
		case ok:
			return a.newLease(owner, ttl, g, sent), nil
		case m.behind:
			if _, err := a.store.sync(ctx, false); err != nil && ended(ctx) == nil {
				return nil, fmt.Errorf("allocator: Acquire: %w", err)
			}
			continue
		}
		sleep := a.cfg.MaxWait
		if !m.next.IsZero() {
			// +1ms: the server's clock must have passed the deadline.
			sleep = min(sleep, m.next.Sub(m.now)+time.Millisecond)
		}
		if sleep <= 0 {
			continue
		}
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("allocator: Acquire: %w", errors.Join(ErrNoFreeItem, ctx.Err()))
		case <-a.closed:
			timer.Stop()
			return nil, fmt.Errorf("allocator: Acquire: %w", ErrClosed)
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// ended is ctx.Err(), or DeadlineExceeded once ctx's deadline has passed
// even if its timer has not fired yet: a client that bounds its reads by
// the context's deadline fails with an i/o timeout at that instant, which
// a loaded machine can let happen before the context reports itself done.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// quietErr says no item is granted until the quiet period ends.
func (a *Allocator) quietErr(s epoch.State) error {
	return fmt.Errorf("%w: %w: generation %d began %s; no grant until %s",
		ErrNoFreeItem, ErrQuietPeriod, s.Gen, s.Since.UTC().Format(time.RFC3339Nano), s.QuietUntil.UTC().Format(time.RFC3339Nano))
}

// Quarantine makes item unavailable for d, whoever holds it: a current
// lease on it is lost. Use Lease.Quarantine to quarantine your own lease.
func (a *Allocator) Quarantine(ctx context.Context, item string, d time.Duration) error {
	if item == "" || len(item) > lock.MaxKeyLen || strings.IndexByte(item, 0) >= 0 {
		return fmt.Errorf("allocator: Quarantine: %w: %q", lock.ErrInvalidKey, item)
	}
	if d < time.Millisecond {
		return fmt.Errorf("allocator: Quarantine %q: %w: duration %v (want >= 1ms)", item, ErrInvalidConfig, d)
	}
	if err := a.store.quarantine(ctx, item, d); err != nil {
		return fmt.Errorf("allocator: Quarantine %q: %w", item, err)
	}
	return nil
}

// RefreshAll extends every lease in one round trip per 1,000 leases and
// returns the ones that were lost (expired or taken by someone else); those
// are marked lost and their Refresh returns ErrLeaseLost from then on.
// Released leases are skipped.
func (a *Allocator) RefreshAll(ctx context.Context, leases []*Lease) (lost []*Lease, err error) {
	const chunk = refreshChunk
	var live []*Lease
	for _, l := range leases {
		if l != nil && !l.isReleased() {
			live = append(live, l)
		}
	}
	for start := 0; start < len(live); start += chunk {
		part := live[start:min(start+chunk, len(live))]
		// Leases of one call share its TTL only when they were acquired
		// with the same one; group by TTL so each keeps its own.
		byTTL := map[time.Duration][]*Lease{}
		for _, l := range part {
			byTTL[l.ttl] = append(byTTL[l.ttl], l)
		}
		for ttl, group := range byTTL {
			lostErrs, err := a.refreshBatch(ctx, ttl, group)
			if err != nil {
				return lost, fmt.Errorf("allocator: RefreshAll: %w", err)
			}
			for i, l := range group {
				if lostErrs[i] != nil {
					lost = append(lost, l)
				}
			}
		}
	}
	return lost, nil
}
