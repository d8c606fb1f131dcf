package allocator

import "github.com/lockpool/lockpool/pkg/lock"

// FieldError is a bad setting of Config: Field names the Go field
// ("LeaseTTL"), Err is ErrInvalidConfig. It is lock.FieldError, the one
// type every layer uses.
type FieldError = lock.FieldError

// FieldErrors returns every *FieldError in err's tree (errors.Join'ed by
// Config.Validate), in order.
func FieldErrors(err error) []*FieldError { return lock.FieldErrors(err) }
