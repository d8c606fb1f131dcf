// Package worker runs a task per allocated item while a goroutine keeps the
// item's lease alive, and stops the task when the lease is lost.
//
// Not yet implemented: see the project's workers-and-runner issue.
package worker
