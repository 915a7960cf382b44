#!/bin/bash
# The way a drop is checked by hand today, for comparison with dropspec: named network
# namespaces from `ip netns`, a veth from `ip link`, the rules loaded with
# iptables-restore or nft inside the namespace, and the bpftrace one-liner on
# tracepoint:skb:kfree_skb counting drops by reason while the traffic runs.
#
# Usage: shell_way.sh SCENARIO.sh
#   SCENARIO.sh (written by `dropspec bench` from a scenario file) sets NAMESPACES (every
#   name starts with dropspec-bench-) and defines setup() and traffic().
# Prints `phase NAME EPOCHREALTIME` after each phase and `drops @[REASON]: COUNT` for
# every line of bpftrace's map.
#
# Safety: every firewall command runs under `ip netns exec` in one of NAMESPACES, so the
# machine's own firewall is never touched; whatever the exit (success, error, Ctrl-C,
# SIGTERM from the harness's time limit), the EXIT trap stops bpftrace and any listener
# and deletes the namespaces.
set -euo pipefail

WORK=$(dirname "$1")
NAMESPACES=()
BACKGROUND=()
BPFTRACE_PID=

cleanup() {
	set +e
	if [ -n "$BPFTRACE_PID" ]; then
		kill "$BPFTRACE_PID" 2>/dev/null
		wait "$BPFTRACE_PID" 2>/dev/null
	fi
	for pid in "${BACKGROUND[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for ns in "${NAMESPACES[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

phase() { echo "phase $1 $EPOCHREALTIME"; }

# Runs a listener in a namespace and waits until its port is bound.
listen() { # listen NS udp|tcp ADDR PORT
	local flags=-l
	[ "$2" = udp ] && flags=-lu
	ip netns exec "$1" nc -k $flags "$3" "$4" >/dev/null 2>&1 &
	BACKGROUND+=($!)
	local ss_flag=-t
	[ "$2" = udp ] && ss_flag=-u
	local tries=500
	until ip netns exec "$1" ss -Hln $ss_flag "sport = :$4" | grep -q .; do
		tries=$((tries - 1))
		if [ "$tries" -le 0 ]; then
			echo "nc did not start listening on $3:$4 within 5 s" >&2
			exit 1
		fi
		sleep 0.01
	done
}

# shellcheck source=/dev/null
source "$1"

phase start
setup
phase setup

# RLIMIT_MEMLOCK no longer limits BPF maps on 5.11+ (memory cgroup accounting), and
# bpftrace says so and goes on when it cannot raise it.
ulimit -l unlimited 2>/dev/null || true
bpftrace -e 'tracepoint:skb:kfree_skb { @[args->reason] = count(); }' \
	>"$WORK/bpftrace.out" 2>"$WORK/bpftrace.err" &
BPFTRACE_PID=$!
# bpftrace prints "Attaching 1 probe..." before it attaches: wait until the kernel
# lists its program on the tracepoint, so no traffic is sent unobserved.
tries=2000
until bpftool perf show 2>/dev/null | grep -q "^pid $BPFTRACE_PID .*kfree_skb"; do
	tries=$((tries - 1))
	if ! kill -0 "$BPFTRACE_PID" 2>/dev/null || [ "$tries" -le 0 ]; then
		echo "bpftrace did not attach:" >&2
		cat "$WORK/bpftrace.err" >&2
		exit 1
	fi
	sleep 0.01
done
phase attach

traffic
phase traffic

# Late drops (a neighbour entry failing, a retransmission) come after the sender is
# done; a short pause is what a person would leave before stopping bpftrace.
sleep 0.1
phase settle

kill -INT "$BPFTRACE_PID"
wait "$BPFTRACE_PID" || true
BPFTRACE_PID=
grep '^@' "$WORK/bpftrace.out" | sed 's/^/drops /' || true
phase collect

for pid in "${BACKGROUND[@]}"; do
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
done
BACKGROUND=()
for ns in "${NAMESPACES[@]}"; do
	ip netns del "$ns"
done
NAMESPACES=()
phase teardown
