package lock

import (
	"errors"
	"fmt"
)

// FieldError is a bad setting of a configuration struct: this package's
// Config, and allocator.Config, worker.Config and worker.ExecTask, whose
// packages use this type under their own name. Field names the Go field
// ("Prefix", "LeaseTTL", "ExecTask.Command"), so a program that maps its
// own settings onto these structs (a config file, flags) can name its own
// key for it. Err is the validating package's sentinel (ErrInvalidConfig,
// allocator.ErrInvalidConfig, worker.ErrInvalidConfig or
// worker.ErrInvalidBatch), so errors.Is keeps working on a FieldError and
// on every error that wraps one.
type FieldError struct {
	// Field is the struct field at fault, e.g. "RefreshInterval". For an
	// ExecTask field it is prefixed with "ExecTask." ("ExecTask.Env").
	Field string
	// Msg says what is wrong and what is wanted, without the field's name.
	// It never holds the value of an ExecTask.Env entry.
	Msg string
	// Err is the sentinel the error wraps.
	Err error
}

// Error returns "<sentinel>: <Field> <Msg>".
func (e *FieldError) Error() string { return fmt.Sprintf("%v: %s %s", e.Err, e.Field, e.Msg) }

// Unwrap returns the sentinel.
func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors returns every *FieldError in err's tree (errors.Join'ed by the
// Validate methods), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		var fe *FieldError
		switch x := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		default:
			if errors.As(err, &fe) {
				out = append(out, fe)
			}
		}
	}
	walk(err)
	return out
}
