package redistest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/luascript"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// CheckScripts adds to c a hook that holds every call of a lockpool script
// (one internal/luascript made; EVALSHA, or EVAL after NOSCRIPT) to the
// script's header: as many KEYS and ARGV as it lists, each fitting its
// entry's template, with every key template one of pkg/keyspace's names.
// So a call that swaps, drops or adds a key or an argument, or a header
// that says something else than the call does, fails the tests. A call
// that does not fit fails with an error saying how, before it reaches the
// server, and [Main] then fails the package's run, also when the call came
// from a background goroutine that drops its errors.
//
// Every client this package returns has the hook; tests that build their
// own clients (cluster clients seeded with one node) add it with this.
func CheckScripts(c redis.UniversalClient) { c.AddHook(scriptHook{}) }

type scriptHook struct{}

func (scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := checkScriptCall(cmd.Args()); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := checkScriptCall(cmd.Args()); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// scriptMismatches are the mismatches the hook saw, for Main.
var scriptMismatches struct {
	mu   sync.Mutex
	errs []string
}

// checkScriptCall checks args, a command's, when it runs a script
// luascript made, and records a mismatch.
func checkScriptCall(args []any) error {
	if len(args) < 3 {
		return nil
	}
	var info *luascript.Info
	var ok bool
	switch strings.ToLower(argString(args[0])) {
	case "evalsha", "evalsha_ro":
		info, ok = luascript.Lookup(argString(args[1]))
	case "eval", "eval_ro":
		info, ok = luascript.LookupSource(argString(args[1]))
	}
	if !ok {
		return nil
	}
	nkeys, err := strconv.Atoi(argString(args[2]))
	if err != nil || nkeys < 0 || 3+nkeys > len(args) {
		return recordMismatch(fmt.Errorf("redistest: %s called with numkeys %v", info.Name, args[2]))
	}
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = argString(args[3+i])
	}
	rest := make([]string, len(args)-3-nkeys)
	for i := range rest {
		rest[i] = argString(args[3+nkeys+i])
	}
	if err := keyspaceNames(info); err != nil {
		return recordMismatch(err)
	}
	if err := info.Check(keys, rest); err != nil {
		return recordMismatch(err)
	}
	return nil
}

func recordMismatch(err error) error {
	scriptMismatches.mu.Lock()
	defer scriptMismatches.mu.Unlock()
	if msg := err.Error(); !slices.Contains(scriptMismatches.errs, msg) {
		scriptMismatches.errs = append(scriptMismatches.errs, msg)
	}
	return err
}

// reportScriptMismatches prints the mismatches seen and reports whether
// there were any.
func reportScriptMismatches() bool {
	scriptMismatches.mu.Lock()
	defer scriptMismatches.mu.Unlock()
	for _, msg := range scriptMismatches.errs {
		fmt.Fprintln(os.Stderr, "FAIL: a script call does not match the script's header:", msg)
	}
	return len(scriptMismatches.errs) > 0
}

// argString is what go-redis sends for v.
func argString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

var (
	// namesChecked caches keyspaceNames by script name.
	namesChecked sync.Map
	placeholder  = regexp.MustCompile(`<\w*>`)
	// keyspaceCatalog holds every name pkg/keyspace makes, with every
	// placeholder written "<>".
	keyspaceCatalog = func() map[string]bool {
		k := keyspace.New("<prefix>", "<suffix>")
		b := k.Batch("<id>")
		m := map[string]bool{}
		for _, name := range []string{
			k.Lock("<item>"), k.LockPrefix(), k.Members(), k.Staging("<id>"), k.Epoch(),
			k.Index(), k.Fence(), k.Bindings(), k.Waiters(), k.Reserved(), k.Foreign(),
			k.SyncState(), k.WakePrefix(), k.Failures(), k.ItemsMarker(), k.LegacyIndex(), k.Control(), k.Cancels(),
			b.Todo, b.Done, b.Failed, b.Failures, b.Meta, b.Errors,
			k.History(), k.HistoryExpiry(), k.Tail("<item>"), k.TailPrefix(), k.Runners(), k.RunnerInfo(), k.Throughput(),
		} {
			m[placeholder.ReplaceAllString(name, "<>")] = true
		}
		return m
	}()
)

// keyspaceNames checks that every key template of info, and every argument
// template naming <base>, is a name pkg/keyspace makes: the header names
// the pool's keys as the keyspace does. Each alternative of a template is
// held to that.
func keyspaceNames(info *luascript.Info) error {
	if err, ok := namesChecked.Load(info.Name); ok {
		err, _ := err.(error)
		return err
	}
	var err error
	base := keyspace.New("<prefix>", "<suffix>").Base()
	for _, p := range append(slices.Clone(info.Keys), info.Args...) {
		isKey := strings.HasPrefix(p.Line, "KEYS")
		if !strings.Contains(p.Template, "<base>") {
			if isKey {
				err = fmt.Errorf("redistest: %s: header line %q: a key's template starts with <base>: every key is a pkg/keyspace name", info.Name, p.Line)
				break
			}
			continue
		}
		for _, alt := range p.Alternatives() {
			name := placeholder.ReplaceAllString(strings.ReplaceAll(alt, "<base>", base), "<>")
			if !keyspaceCatalog[name] {
				err = fmt.Errorf("redistest: %s: header line %q: %s is none of pkg/keyspace's names", info.Name, p.Line, alt)
				break
			}
		}
		if err != nil {
			break
		}
	}
	namesChecked.Store(info.Name, err)
	return err
}
