/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What every dropspec probe needs to count per watch slot, written once:
 *   dropspec_netns   the watched namespaces (netns inode -> slot id), filled by
 *                    harness/src/probes/slots.rs
 *   dropspec_lost    per-CPU counters of what the probe could not count
 *   netns_of_skb()   the namespace a packet belongs to, netns_of_sock() a socket's
 *   watched_slot()   the slot watching a namespace, if any
 *   percpu_value()   the per-CPU value to add to, creating the key on first use
 *
 * Each probe (drops.bpf.c, hooks.bpf.c) includes this once and adds only its own part:
 * its own counter maps, keys and programs. Every object gets its own instances of these
 * maps: the drop probe and the hook probe watch slots independently.
 *
 * The including probe defines DROPSPEC_LOST_COUNTERS first: how many lost counters its
 * ABI header indexes.
 */
#ifndef DROPSPEC_SLOTS_BPF_H
#define DROPSPEC_SLOTS_BPF_H

#include "kernel_types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#ifndef DROPSPEC_LOST_COUNTERS
#error "define DROPSPEC_LOST_COUNTERS (the probe's number of lost counters) before slots.bpf.h"
#endif

/*
 * Flags of every probe's per-CPU counter hashes. Preallocated, creating such a map
 * allocates each entry's per-CPU memory up front, one pcpu_alloc per entry: the drop
 * probe's two 16,384-entry hashes took about 25 ms on 6.18, most of a one-file run's
 * probe load, and far longer under TCG. Kernels with the BPF memory allocator (6.1+:
 * struct bpf_mem_alloc) let tracing programs allocate entries in any context, so build.rs
 * compiles each object a second time with DROPSPEC_ALLOC_ON_INSERT and
 * probes::loader::object_for_kernel picks that build there. Older kernels keep the
 * preallocated maps: 5.10 warns that run-time allocation in tracing programs is unsafe.
 */
#ifdef DROPSPEC_ALLOC_ON_INSERT
#define DROPSPEC_COUNTER_MAP_FLAGS 1 /* BPF_F_NO_PREALLOC */
#else
#define DROPSPEC_COUNTER_MAP_FLAGS 0
#endif

/* Namespaces watched at once, per probe (MAX_NETNS in harness/src/probes/slots.rs). */
#define DROPSPEC_MAX_NETNS 1024

/* Watched namespaces: netns inode number -> slot id. Nothing elsewhere is counted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DROPSPEC_MAX_NETNS);
	__type(key, __u32);
	__type(value, __u32);
} dropspec_netns SEC(".maps");

/* Things not counted, or counted without detail, indexed by the probe's LOST_* defines. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROPSPEC_LOST_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} dropspec_lost SEC(".maps");

static __always_inline void count_lost(__u32 index)
{
	__u64 *lost = bpf_map_lookup_elem(&dropspec_lost, &index);
	if (lost)
		*lost += 1;
}

/*
 * The per-CPU value of `key` in `map` for the caller to add to. NULL when there is
 * nothing left to add: `first` (the value after one add) became the key's value, or
 * the map is full, which is counted in dropspec_lost[lost_index]. The caller's adds
 * need no atomics: the value is this CPU's, and the kernel does not nest one tracing
 * program on a CPU.
 */
static __always_inline void *percpu_value(void *map, const void *key, const void *first,
					  __u32 lost_index)
{
	void *value = bpf_map_lookup_elem(map, key);
	if (value)
		return value;
	long err = bpf_map_update_elem(map, key, first, BPF_NOEXIST);
	if (err == 0)
		return 0;
	/* Another CPU created the key between our lookup and update: add to ours. */
	if (err == -EEXIST)
		value = bpf_map_lookup_elem(map, key);
	if (!value)
		count_lost(lost_index);
	return value;
}

static __always_inline struct net *netns_of_sock(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net);
}

/*
 * Whether skb->dev holds neither a device nor UDP's dev_scratch, which packs truesize in
 * its low 32 bits and the length above them: a small non-zero value is the colour bit of
 * an rb_node's parent (the skb sits in a tree, as an IP fragment queue's fragments do,
 * and those are freed by the reassembly timer). Such a drop is not given the task's
 * namespace: in softirq the task is whichever one the timer interrupted, and on a
 * one-CPU guest that was once a harness thread in the server's namespace, so two
 * fragments were counted there. (A zero-length UDP datagram's scratch looks the same and
 * has a socket-less drop go uncounted: no scenario sends one.)
 */
static __always_inline int not_device_nor_scratch(const void *dev)
{
	return dev && (unsigned long)dev < 0x100000000UL;
}

/*
 * The smallest kernel stack a task has (THREAD_SIZE) on the kernels dropspec runs on:
 * 16 KiB on x86-64 (and arm64) without KASAN.
 */
#define DROPSPEC_TASK_STACK_MIN 16384

/*
 * Whether `anchor`, an address on the kernel stack the program was called on, lies on
 * the current task's own stack. A tp_btf program's context is such an address: the
 * tracepoint's arguments, in bpf_trace_run's frame. (The program's own frame is not:
 * on 7.2.13 the drop probe's never was, in the reading task's own UDP_CSUM drops, while
 * a small test program's was; see docs/kernel-findings.md.) Interrupts that come while
 * the CPU is in the kernel, and the softirqs run at their end or by local_bh_enable, run
 * on the CPU's interrupt stack (x86-64), where the current task is whichever one was
 * interrupted; ksoftirqd is a task, but in the initial namespace, never watched. An
 * interrupt from user mode stays on the task's stack, though: see dropspec_in_timer below
 * for the timers that matter. (Comparing a pointer needs root, as loading the probes
 * does.) A kernel with larger stacks (KASAN: 32 KiB) fails the test in process context
 * too: such a drop goes uncounted and its scenario fails, never a wrong claim.
 */
static __always_inline int on_task_stack(const void *anchor)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned long base = (unsigned long)BPF_CORE_READ(task, stack);
	unsigned long top = base + DROPSPEC_TASK_STACK_MIN;
	/* Keep clang from folding the two bounds into `at - base < size`: the verifier
	 * refuses arithmetic between a context pointer and an unbounded value. */
	asm volatile("" : "+r"(top));
	unsigned long at = (unsigned long)anchor;
	return base && at >= base && at < top;
}

/*
 * Per CPU: 1 while a timer callback (timer_list, run by the timer softirq) runs there,
 * set and cleared by the two programs below, which user space attaches with every
 * object that includes this file (probes/slots.rs, attach_timer_marks). A timer fires
 * wherever the CPU happens to be: when the interrupt came from user mode, x86-64 runs
 * the interrupt and the softirq after it on the interrupted task's own stack, so
 * on_task_stack() cannot tell them from process context, and this flag does it for
 * timers: in a timer callback the current task is a bystander (a reassembly timer
 * purging fragments, a neighbour timer dropping its queue). Softirqs do not nest on a
 * CPU, so a flag is exact, and the next exit clears it whatever happened before.
 * hrtimers are left out: they nest (a hard one interrupts a soft one), so one program
 * could skip its own nested run and leave a count wrong, and no drop without device
 * or socket is known there. Other softirq work on a task's stack is not tracked either:
 * counting every softirq would add two program runs to each packet received (its cost
 * shows on the flood bench), and packets there carry their device.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} dropspec_in_timer SEC(".maps");

static __always_inline void mark_timer(__u32 running)
{
	__u32 zero = 0;
	__u32 *flag = bpf_map_lookup_elem(&dropspec_in_timer, &zero);
	if (flag)
		*flag = running;
}

SEC("raw_tracepoint/timer_expire_entry")
int dropspec_timer_entry(void *ctx)
{
	mark_timer(1);
	return 0;
}

SEC("raw_tracepoint/timer_expire_exit")
int dropspec_timer_exit(void *ctx)
{
	mark_timer(0);
	return 0;
}

/*
 * Whether the current task's namespace may stand for a packet's: not inside a timer
 * callback, and, when the program has a `stack_anchor` (see on_task_stack), on the
 * task's own stack. Only the tp_btf drop probe passes one (watched_slot_of_skb_btf);
 * netns_of_skb() passes 0: a classic tracepoint's context is a per-CPU buffer, and the
 * hook, datapath and watch probes have not had it threaded through.
 */
static __always_inline int in_process_context(const void *stack_anchor)
{
	__u32 zero = 0;
	__u32 *in_timer = bpf_map_lookup_elem(&dropspec_in_timer, &zero);
	if (in_timer && *in_timer)
		return 0;
	return !stack_anchor || on_task_stack(stack_anchor);
}

/*
 * The namespace a packet belongs to. Measured on 6.18, in order of reliability: the
 * device the skb is on, the receiving socket (kfree_skb's rx_sk, 6.12 on), the skb's
 * own socket (`sk`, skb->sk read by the caller, which often needs it anyway), and last
 * the task that happens to run, in process context only (in_process_context(): right
 * for most local output; in an interrupt or a timer the task is a bystander).
 */
static __always_inline struct net *netns_of_skb(struct sk_buff *skb, struct sock *sk,
						struct sock *rx_sk)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		/*
		 * While an skb waits in a UDP socket's queue, skb->dev holds UDP's
		 * dev_scratch (truesize and flags, not a pointer): the read fails and
		 * yields NULL. Such drops (UDP_CSUM in udp_recvmsg or
		 * __first_packet_length) happen in the reading task: fall through.
		 */
		struct net *net = BPF_CORE_READ(dev, nd_net.net);
		if (net)
			return net;
	}
	if (rx_sk)
		return netns_of_sock(rx_sk);
	if (sk)
		return netns_of_sock(sk);
	if (not_device_nor_scratch(dev) || !in_process_context(0))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	return BPF_CORE_READ(task, nsproxy, net_ns);
}

/*
 * The slot watching the namespace netns_of_skb() would name, for BTF-typed programs
 * (tp_btf, fentry/fexit), whose `skb`, `sk` and `rx_sk` the verifier knows as kernel
 * pointers: every field is a direct load (the JIT makes each one fault-safe, a bad
 * pointer reading 0) instead of a bpf_probe_read_kernel call, which was most of the
 * probe's cost per drop. NULL when nobody watches it. `ctx` is the program's context,
 * the anchor of on_task_stack().
 *
 * The order and the fall-throughs are netns_of_skb()'s. UDP's dev_scratch (see there)
 * is not a pointer: it packs truesize, length and two flags below bit 57, so it never
 * has the top bit that every 64-bit kernel address has (x86-64 and arm64 alike, tags
 * included). Such a value is not followed: the drop falls through to the sockets and
 * the task (in process context only) exactly as when netns_of_skb()'s read of it fails.
 */
static __always_inline __u32 *watched_slot_of_skb_btf(struct sk_buff *skb, struct sock *sk,
						      struct sock *rx_sk, const void *ctx)
{
	struct net *net = 0;
	struct net_device *dev = skb->dev;
	if (dev && (unsigned long)dev >= 0x8000000000000000UL)
		net = dev->nd_net.net;
	if (!net && rx_sk)
		net = rx_sk->__sk_common.skc_net.net;
	if (!net && sk)
		net = sk->__sk_common.skc_net.net;
	__u32 inum;
	if (net) {
		inum = net->ns.inum;
	} else if (not_device_nor_scratch(dev) || !in_process_context(ctx)) {
		return 0;
	} else {
		/* Rare (no device, no socket): read as netns_of_skb() does (the task's
		 * BTF pointer, bpf_get_current_task_btf, does not exist on 5.10). */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		inum = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	}
	if (!inum)
		return 0;
	return bpf_map_lookup_elem(&dropspec_netns, &inum);
}

/* The slot watching `net`, or NULL when nobody watches it (or `net` is unknown). */
static __always_inline __u32 *watched_slot(struct net *net)
{
	if (!net)
		return 0;
	__u32 inum = BPF_CORE_READ(net, ns.inum);
	return bpf_map_lookup_elem(&dropspec_netns, &inum);
}

#endif /* DROPSPEC_SLOTS_BPF_H */
