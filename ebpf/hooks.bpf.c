// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Retina's hook points: counts the failed returns of five kernel functions per watched
 * network namespace (see hooks.h for which failure of which function is counted), the
 * way Microsoft Retina's dropreason plugin reports drops on kernels without drop
 * reasons. A second vocabulary next to drops.bpf.c's kfree_skb reasons.
 *
 * Every function has an entry and an exit program, in two flavours: fentry/fexit
 * (cheap, needs BTF for the function and a kernel that allows tracing programs) and
 * kprobe/kretprobe (anything kallsyms knows, module functions included). User space
 * loads one pair per function, whichever the running kernel accepts. The entry records
 * the namespace, length and protocol while the skb still exists; the exit decides
 * whether the call failed and counts it. Aggregated per CPU in the kernel; no events.
 *
 * The watched namespaces, the namespace attribution, the per-CPU add and the lost
 * counters are slots.bpf.h's, the same code the drop probe runs; this file adds the
 * call frames and the hook counters.
 */
#include "kernel_types.h"

#if defined(__TARGET_ARCH_x86)
/*
 * The kernel's x86-64 register frame, which kprobe programs get as their context
 * (fixed ABI: the verifier checks these offsets). bpf_tracing.h reads it by the
 * kernel's field names when it believes it sees vmlinux.h, which kernel_types.h
 * stands in for.
 */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#define __VMLINUX_H__
#define DROPSPEC_HAVE_KPROBES 1
#endif

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "hooks.h"
/* slots.bpf.h sizes its dropspec_lost by this name. */
#define DROPSPEC_LOST_COUNTERS DROPSPEC_HOOK_LOST_COUNTERS
#include "slots.bpf.h"

/* GPL-compatible: bpf_probe_read_kernel and bpf_get_current_task are GPL-only helpers. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * inet_csk_accept's errno: before 6.10 an `int *err` argument (the third), from 6.10 a
 * field of `struct proto_accept_arg *arg` (the second) at this byte offset. User space
 * reads which from BTF.
 */
const volatile __u32 cfg_accept_err_in_arg = 0;
const volatile __u32 cfg_accept_err_offset = 0;

#define NF_DROP 0

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DROPSPEC_HOOK_MAX_KEYS);
	__uint(map_flags, DROPSPEC_COUNTER_MAP_FLAGS);
	__type(key, struct dropspec_hook_key);
	__type(value, struct dropspec_hook_value);
} dropspec_hook_counts SEC(".maps");

/*
 * Open calls per execution context (see context_key). LRU so that contexts that end
 * (threads that exit) need no sweep; an open frame is recent, so it is never the one
 * evicted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DROPSPEC_HOOK_MAX_CONTEXTS);
	__type(key, __u64);
	__type(value, struct dropspec_hook_frames);
} dropspec_hook_frames SEC(".maps");

/*
 * Calls nest strictly within one context: a thread (softirqs that interrupt it run to
 * completion before it resumes), or, for the idle tasks that all have pid 0, a CPU.
 * Keyed by thread rather than CPU because a thread may move between CPUs mid-call.
 */
static __always_inline __u64 context_key(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (tid == 0)
		return (1ULL << 63) | bpf_get_smp_processor_id();
	return tid;
}

static __always_inline void push(__u32 hook, struct net *net, struct sk_buff *skb, __u64 err_ptr)
{
	__u64 key = context_key();
	struct dropspec_hook_frames *frames = bpf_map_lookup_elem(&dropspec_hook_frames, &key);
	if (!frames) {
		struct dropspec_hook_frames empty = {};
		bpf_map_update_elem(&dropspec_hook_frames, &key, &empty, BPF_NOEXIST);
		frames = bpf_map_lookup_elem(&dropspec_hook_frames, &key);
		if (!frames)
			return;
	}
	__u64 now = bpf_ktime_get_ns();
	__u32 depth = frames->depth;
	/* Frames left by calls whose exit never ran: dropped, and lost if watched. */
	for (int i = 0; i < DROPSPEC_HOOK_DEPTH; i++) {
		if (depth == 0 || depth > DROPSPEC_HOOK_DEPTH)
			break;
		struct dropspec_hook_frame *top = &frames->frame[(depth - 1) & (DROPSPEC_HOOK_DEPTH - 1)];
		if (now - top->entered < DROPSPEC_HOOK_STALE_NS)
			break;
		if (top->slot != DROPSPEC_HOOK_UNWATCHED)
			count_lost(DROPSPEC_HOOK_LOST_STALE);
		depth--;
	}
	__u32 *slot = watched_slot(net);
	frames->depth = depth + 1;
	if (depth >= DROPSPEC_HOOK_DEPTH) {
		/* Counted by depth only; its exit finds no frame and counts nothing. */
		if (slot)
			count_lost(DROPSPEC_HOOK_LOST_DEEP);
		return;
	}
	struct dropspec_hook_frame *frame = &frames->frame[depth];
	frame->hook = hook;
	frame->entered = now;
	frame->slot = slot ? *slot : DROPSPEC_HOOK_UNWATCHED;
	frame->len = skb ? BPF_CORE_READ(skb, len) : 0;
	frame->l3proto = skb ? bpf_ntohs(BPF_CORE_READ(skb, protocol)) : 0;
	frame->pad = 0;
	frame->err_ptr = err_ptr;
}

/* Pops this hook's frame; false when there is none to count (unwatched, too deep, unpaired). */
static __always_inline int pop(__u32 hook, struct dropspec_hook_frame *out)
{
	__u64 key = context_key();
	struct dropspec_hook_frames *frames = bpf_map_lookup_elem(&dropspec_hook_frames, &key);
	/*
	 * No open call: it began before the probe attached (the race at load time), or
	 * the frames were reset below. Nothing to count, and nothing lost for a watcher.
	 */
	if (!frames || frames->depth == 0)
		return 0;
	__u32 depth = frames->depth - 1;
	frames->depth = depth;
	if (depth >= DROPSPEC_HOOK_DEPTH)
		return 0;
	struct dropspec_hook_frame *frame = &frames->frame[depth];
	if (frame->hook != hook) {
		/* A kretprobe missed a return: the stack no longer pairs; start over. */
		frames->depth = 0;
		count_lost(DROPSPEC_HOOK_LOST_UNPAIRED);
		return 0;
	}
	*out = *frame;
	return frame->slot != DROPSPEC_HOOK_UNWATCHED;
}

static __always_inline void count(struct dropspec_hook_frame *frame, __s32 ret)
{
	struct dropspec_hook_key key = {
		.slot = frame->slot,
		.hook = frame->hook,
		.ret = ret,
		.l3proto = frame->l3proto,
	};
	struct dropspec_hook_value first = { .count = 1, .bytes = frame->len };
	struct dropspec_hook_value *value =
		percpu_value(&dropspec_hook_counts, &key, &first, DROPSPEC_HOOK_LOST_KEYS);
	if (value) {
		value->count += 1;
		value->bytes += frame->len;
	}
}

/* ---- what each function's entry records and its exit counts ---------------------- */

static __always_inline void enter_nf_hook_slow(struct sk_buff *skb, struct nf_hook_state *state)
{
	push(DROPSPEC_HOOK_NF_HOOK_SLOW, BPF_CORE_READ(state, net), skb, 0);
}

static __always_inline void exit_nf_hook_slow(__s64 ret)
{
	struct dropspec_hook_frame frame;
	/* NF_DROP comes back as a negative errno (-EPERM unless the hook chose one). */
	if (pop(DROPSPEC_HOOK_NF_HOOK_SLOW, &frame) && (__s32)ret < 0)
		count(&frame, (__s32)ret);
}

static __always_inline void enter_nf_nat_inet_fn(struct sk_buff *skb, struct nf_hook_state *state)
{
	push(DROPSPEC_HOOK_NF_NAT_INET_FN, BPF_CORE_READ(state, net), skb, 0);
}

static __always_inline void exit_nf_nat_inet_fn(__s64 ret)
{
	struct dropspec_hook_frame frame;
	/* A netfilter verdict; its upper bits may carry an errno, the low byte is the verdict. */
	if (pop(DROPSPEC_HOOK_NF_NAT_INET_FN, &frame) && ((__u32)ret & 0xff) == NF_DROP)
		count(&frame, (__s32)ret);
}

static __always_inline void enter_nf_conntrack_confirm(struct sk_buff *skb)
{
	/* Attributed as the drop probe attributes a dropped skb (slots.bpf.h). */
	struct net *net = netns_of_skb(skb, BPF_CORE_READ(skb, sk), 0);
	push(DROPSPEC_HOOK_NF_CONNTRACK_CONFIRM, net, skb, 0);
}

static __always_inline void exit_nf_conntrack_confirm(__s64 ret)
{
	struct dropspec_hook_frame frame;
	if (pop(DROPSPEC_HOOK_NF_CONNTRACK_CONFIRM, &frame) && ((__u32)ret & 0xff) == NF_DROP)
		count(&frame, (__s32)ret);
}

static __always_inline void enter_tcp_v4_connect(struct sock *sk)
{
	push(DROPSPEC_HOOK_TCP_V4_CONNECT, netns_of_sock(sk), 0, 0);
}

static __always_inline void exit_tcp_v4_connect(__s64 ret)
{
	struct dropspec_hook_frame frame;
	if (pop(DROPSPEC_HOOK_TCP_V4_CONNECT, &frame) && (__s32)ret != 0)
		count(&frame, (__s32)ret);
}

static __always_inline void enter_inet_csk_accept(struct sock *sk, __u64 second, __u64 third)
{
	__u64 err_ptr = cfg_accept_err_in_arg ? second + cfg_accept_err_offset : third;
	push(DROPSPEC_HOOK_INET_CSK_ACCEPT, netns_of_sock(sk), 0, err_ptr);
}

static __always_inline void exit_inet_csk_accept(__s64 ret)
{
	struct dropspec_hook_frame frame;
	if (!pop(DROPSPEC_HOOK_INET_CSK_ACCEPT, &frame) || ret != 0)
		return;
	int err = 0;
	if (frame.err_ptr)
		bpf_probe_read_kernel(&err, sizeof(err), (void *)frame.err_ptr);
	if (err < 0)
		count(&frame, err);
}

/* ---- fentry/fexit ------------------------------------------------------------------ */

/* The return value, wherever the function's arity puts it (bpf_get_func_ret, 5.17+). */
static __always_inline __s64 fexit_ret(void *ctx)
{
	__u64 ret = 0;
	bpf_get_func_ret(ctx, &ret);
	return (__s64)ret;
}

SEC("fentry/nf_hook_slow")
int BPF_PROG(dropspec_fentry_nf_hook_slow, struct sk_buff *skb, struct nf_hook_state *state)
{
	enter_nf_hook_slow(skb, state);
	return 0;
}

SEC("fexit/nf_hook_slow")
int dropspec_fexit_nf_hook_slow(void *ctx)
{
	exit_nf_hook_slow(fexit_ret(ctx));
	return 0;
}

SEC("fentry/nf_nat_inet_fn")
int BPF_PROG(dropspec_fentry_nf_nat_inet_fn, void *priv, struct sk_buff *skb,
	     struct nf_hook_state *state)
{
	enter_nf_nat_inet_fn(skb, state);
	return 0;
}

SEC("fexit/nf_nat_inet_fn")
int dropspec_fexit_nf_nat_inet_fn(void *ctx)
{
	exit_nf_nat_inet_fn(fexit_ret(ctx));
	return 0;
}

SEC("fentry/__nf_conntrack_confirm")
int BPF_PROG(dropspec_fentry_nf_conntrack_confirm, struct sk_buff *skb)
{
	enter_nf_conntrack_confirm(skb);
	return 0;
}

SEC("fexit/__nf_conntrack_confirm")
int dropspec_fexit_nf_conntrack_confirm(void *ctx)
{
	exit_nf_conntrack_confirm(fexit_ret(ctx));
	return 0;
}

SEC("fentry/tcp_v4_connect")
int BPF_PROG(dropspec_fentry_tcp_v4_connect, struct sock *sk)
{
	enter_tcp_v4_connect(sk);
	return 0;
}

SEC("fexit/tcp_v4_connect")
int dropspec_fexit_tcp_v4_connect(void *ctx)
{
	exit_tcp_v4_connect(fexit_ret(ctx));
	return 0;
}

/*
 * Arguments fetched by number: a tracing program may not read past the function's own
 * arguments, and inet_csk_accept has four before 6.10 and two after.
 */
SEC("fentry/inet_csk_accept")
int dropspec_fentry_inet_csk_accept(void *ctx)
{
	__u64 sk = 0, second = 0, third = 0;
	bpf_get_func_arg(ctx, 0, &sk);
	bpf_get_func_arg(ctx, 1, &second);
	if (!cfg_accept_err_in_arg)
		bpf_get_func_arg(ctx, 2, &third);
	enter_inet_csk_accept((struct sock *)sk, second, third);
	return 0;
}

SEC("fexit/inet_csk_accept")
int dropspec_fexit_inet_csk_accept(void *ctx)
{
	exit_inet_csk_accept(fexit_ret(ctx));
	return 0;
}

/* ---- kprobe/kretprobe ---------------------------------------------------------------- */

#ifdef DROPSPEC_HAVE_KPROBES
SEC("kprobe/nf_hook_slow")
int BPF_KPROBE(dropspec_kprobe_nf_hook_slow, struct sk_buff *skb, struct nf_hook_state *state)
{
	enter_nf_hook_slow(skb, state);
	return 0;
}

SEC("kretprobe/nf_hook_slow")
int BPF_KRETPROBE(dropspec_kretprobe_nf_hook_slow, long ret)
{
	exit_nf_hook_slow(ret);
	return 0;
}

SEC("kprobe/nf_nat_inet_fn")
int BPF_KPROBE(dropspec_kprobe_nf_nat_inet_fn, void *priv, struct sk_buff *skb,
	       struct nf_hook_state *state)
{
	enter_nf_nat_inet_fn(skb, state);
	return 0;
}

SEC("kretprobe/nf_nat_inet_fn")
int BPF_KRETPROBE(dropspec_kretprobe_nf_nat_inet_fn, long ret)
{
	exit_nf_nat_inet_fn(ret);
	return 0;
}

SEC("kprobe/__nf_conntrack_confirm")
int BPF_KPROBE(dropspec_kprobe_nf_conntrack_confirm, struct sk_buff *skb)
{
	enter_nf_conntrack_confirm(skb);
	return 0;
}

SEC("kretprobe/__nf_conntrack_confirm")
int BPF_KRETPROBE(dropspec_kretprobe_nf_conntrack_confirm, long ret)
{
	exit_nf_conntrack_confirm(ret);
	return 0;
}

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(dropspec_kprobe_tcp_v4_connect, struct sock *sk)
{
	enter_tcp_v4_connect(sk);
	return 0;
}

SEC("kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(dropspec_kretprobe_tcp_v4_connect, long ret)
{
	exit_tcp_v4_connect(ret);
	return 0;
}

SEC("kprobe/inet_csk_accept")
int BPF_KPROBE(dropspec_kprobe_inet_csk_accept, struct sock *sk, __u64 second, __u64 third)
{
	enter_inet_csk_accept(sk, second, third);
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(dropspec_kretprobe_inet_csk_accept, long ret)
{
	exit_inet_csk_accept(ret);
	return 0;
}
#endif /* DROPSPEC_HAVE_KPROBES */
