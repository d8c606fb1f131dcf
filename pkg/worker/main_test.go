package worker_test

import (
	"testing"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/worker"
)

// TestMain lets the test binary serve as the exec-task wrapper, and gives
// the tests a Redis.
func TestMain(m *testing.M) {
	worker.ServeExecWrapper()
	redistest.Main(m)
}
