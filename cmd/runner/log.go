package main

import (
	"io"
	"time"

	"github.com/hashicorp/go-hclog"
)

// newLogger builds the hclog logger the log section asks for. In JSON,
// durations are strings ("30s"): hclog would write nanoseconds.
func newLogger(c *Config, out io.Writer) hclog.Logger {
	l := hclog.New(&hclog.LoggerOptions{
		Name:       "runner",
		Level:      hclog.LevelFromString(c.Log.Level),
		JSONFormat: c.Log.Format == "json",
		Output:     out,
		TimeFormat: "2006-01-02T15:04:05.000Z07:00",
	})
	if c.Log.Format == "json" {
		return durationStrings{l}
	}
	return l
}

// durationStrings is an hclog.Logger that turns time.Duration arguments
// into their String form before the JSON encoder sees them. hclog has no
// hook for a value's encoding, so this wraps every method that takes
// arguments or returns a logger (which must stay wrapped).
type durationStrings struct{ hclog.Logger }

// stringDurations returns args with durations as strings (a copy, when
// there is one: the caller's slice is not changed).
func stringDurations(args []any) []any {
	copied := false
	for i, a := range args {
		if d, ok := a.(time.Duration); ok {
			if !copied {
				args, copied = append([]any(nil), args...), true
			}
			args[i] = d.String()
		}
	}
	return args
}

func (l durationStrings) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, stringDurations(args)...)
}
func (l durationStrings) Trace(msg string, args ...any) {
	l.Logger.Trace(msg, stringDurations(args)...)
}
func (l durationStrings) Debug(msg string, args ...any) {
	l.Logger.Debug(msg, stringDurations(args)...)
}
func (l durationStrings) Info(msg string, args ...any) { l.Logger.Info(msg, stringDurations(args)...) }
func (l durationStrings) Warn(msg string, args ...any) { l.Logger.Warn(msg, stringDurations(args)...) }
func (l durationStrings) Error(msg string, args ...any) {
	l.Logger.Error(msg, stringDurations(args)...)
}
func (l durationStrings) With(args ...any) hclog.Logger {
	return durationStrings{l.Logger.With(stringDurations(args)...)}
}
func (l durationStrings) Named(name string) hclog.Logger {
	return durationStrings{l.Logger.Named(name)}
}
func (l durationStrings) ResetNamed(name string) hclog.Logger {
	return durationStrings{l.Logger.ResetNamed(name)}
}
