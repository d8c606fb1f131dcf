package worker

import (
	"errors"
	"fmt"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// FieldError is a bad setting of Config or ExecTask: Field names the Go
// field ("LeaseTTL", "ExecTask.Command"), Err is ErrInvalidConfig or
// ErrInvalidBatch. It is allocator.FieldError, shared by both layers.
type FieldError = allocator.FieldError

// FieldErrors returns every *FieldError in err's tree (errors.Join'ed by
// Config.Validate and ExecTask.Validate), in order.
func FieldErrors(err error) []*FieldError { return allocator.FieldErrors(err) }

// fieldProblems collects FieldErrors for errors.Join.
type fieldProblems []error

func (p *fieldProblems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrInvalidConfig})
}

func (p fieldProblems) err() error { return errors.Join(p...) }
