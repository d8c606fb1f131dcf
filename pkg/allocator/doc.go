// Package allocator hands out free items of a lock pool to workers as
// fenced, expiring leases. It is built on package lock and shares its
// keyspace, so an allocated item is an ordinary lock to lock users.
//
// Not yet implemented: see the project's allocator issue.
package allocator
