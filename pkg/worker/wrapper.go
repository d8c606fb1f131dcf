package worker

// ServeExecWrapper makes this program usable as the exec supervisor of
// ExecTask.Wrapper. If the process was started as a supervisor, it serves
// the runner that started it and exits (os.Exit) once that runner is gone,
// never returning; otherwise it returns at once and does nothing. Call it
// first thing in main, before flags are parsed or any work is done (test
// binaries: first thing in TestMain, or in an init function of the test
// package).
//
// On Linux a process that runs an ExecTask with Wrapper starts one
// supervisor, a re-execution of its own executable, when the first such
// task runs; it serves every later one. The supervisor is the parent of
// the tasks' process group leaders: it starts each command in a group of
// its own, forwards the runner's SIGTERM and SIGKILL to the group, kills
// what the command left in its group when it exits, and SIGKILLs every
// group it started as soon as the runner is gone, however the runner died
// (end of file on the socket between them, at once; a parent-death signal
// and a one-second getppid poll as fallbacks). It leads a process group of
// its own, so signals for the runner's group (a terminal's Ctrl-C, a kill
// of the group) do not reach it, and it ignores SIGTERM, SIGINT, SIGHUP and
// SIGQUIT while the runner lives. Elsewhere there is no supervisor and
// ServeExecWrapper does nothing.
func ServeExecWrapper() { serveSupervisor() }
