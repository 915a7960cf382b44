/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The ABI between the hook-point probe (hooks.bpf.c) and user space
 * (harness/src/probes/abi.rs, which mirrors these structs as #[repr(C)] and checks the
 * sizes and offsets).
 */
#ifndef DROPSPEC_HOOKS_H
#define DROPSPEC_HOOKS_H

/*
 * The kernel functions watched, one id each (dropspec_hook_key.hook). The counted
 * failure of each is what Retina's dropreason plugin calls it:
 *   nf_hook_slow            returns < 0         IPTABLE_RULE_DROP
 *   nf_nat_inet_fn          returns NF_DROP     IPTABLE_NAT_DROP
 *   __nf_conntrack_confirm  returns NF_DROP     CONNTRACK_ADD_DROP
 *   tcp_v4_connect          returns != 0        TCP_CONNECT_BASIC
 *   inet_csk_accept         returns NULL, err<0 TCP_ACCEPT_BASIC
 */
#define DROPSPEC_HOOK_NF_HOOK_SLOW 1
#define DROPSPEC_HOOK_NF_NAT_INET_FN 2
#define DROPSPEC_HOOK_NF_CONNTRACK_CONFIRM 3
#define DROPSPEC_HOOK_TCP_V4_CONNECT 4
#define DROPSPEC_HOOK_INET_CSK_ACCEPT 5

/* Key of dropspec_hook_counts: one row per (watch slot, hook, return value, L3). */
struct dropspec_hook_key {
	__u32 slot;    /* slot id from dropspec_netns (slots.bpf.h) */
	__u32 hook;    /* DROPSPEC_HOOK_* */
	__s32 ret;     /* the failure: nf_hook_slow's errno, NF_DROP (0), connect's or accept's errno */
	__u16 l3proto; /* skb->protocol in host order; 0 for the socket calls */
	__u16 pad;
};

/* Value of dropspec_hook_counts, one per CPU; user space sums them. */
struct dropspec_hook_value {
	__u64 count;
	__u64 bytes; /* skb->len when the call began; 0 for the socket calls */
};

/*
 * What an entry probe leaves for its exit probe: the exit of a kretprobe sees only the
 * return value, and by then a dropped skb is freed. Frames nest (a REJECT inside
 * nf_hook_slow sends a packet through nf_hook_slow again), so each context keeps a
 * small stack of them.
 */
#define DROPSPEC_HOOK_DEPTH 8

struct dropspec_hook_frame {
	__u32 hook;
	__u32 slot; /* DROPSPEC_HOOK_UNWATCHED: not counted, kept to stay balanced */
	__u32 len;
	__u16 l3proto;
	__u16 pad;
	__u64 err_ptr; /* inet_csk_accept: where its errno will be written */
	__u64 entered; /* bpf_ktime_get_ns() at the entry: see DROPSPEC_HOOK_STALE_NS */
};

/*
 * A frame older than this when its context enters another call belongs to a call whose
 * exit never ran: a tracing program the kernel skipped as recursion (an fexit program
 * interrupted, or preempted on its CPU, by another run of itself). No hook function's
 * call lasts a second; a stale frame left in place would sit under every later call of
 * its thread until the stack was "too deep" for all of them.
 */
#define DROPSPEC_HOOK_STALE_NS 1000000000ULL

struct dropspec_hook_frames {
	__u32 depth;
	__u32 pad;
	struct dropspec_hook_frame frame[DROPSPEC_HOOK_DEPTH];
};

#define DROPSPEC_HOOK_UNWATCHED 0xffffffffu
#define DROPSPEC_HOOK_MAX_KEYS 4096
#define DROPSPEC_HOOK_MAX_CONTEXTS 8192

/* Indexes of hooks.bpf.c's dropspec_lost (slots.bpf.h). */
#define DROPSPEC_HOOK_LOST_KEYS 0     /* failures not counted: dropspec_hook_counts full */
#define DROPSPEC_HOOK_LOST_UNPAIRED 1 /* an exit that is not its context's last entry (a
				       * kretprobe missed a return) */
#define DROPSPEC_HOOK_LOST_DEEP 2     /* watched calls nested deeper than DROPSPEC_HOOK_DEPTH */
#define DROPSPEC_HOOK_LOST_STALE 3    /* watched calls whose exit never ran (stale frames) */
#define DROPSPEC_HOOK_LOST_COUNTERS 4

_Static_assert(sizeof(struct dropspec_hook_key) == 16, "dropspec_hook_key ABI");
_Static_assert(sizeof(struct dropspec_hook_value) == 16, "dropspec_hook_value ABI");

#endif /* DROPSPEC_HOOKS_H */
