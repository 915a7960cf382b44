// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Counts packet drops (tracepoint skb:kfree_skb) per watched network namespace,
 * aggregated in the kernel: one per-CPU counter per (slot, reason, call site, L3, L4)
 * in dropspec_drops, and for the first DROPSPEC_STACK_SAMPLES drops of each per CPU one
 * per (the same, kernel stack) in dropspec_stacks instead. No ring buffer and no
 * per-event wakeup; a run of the same drop on a CPU (a flood) is counted in a one-entry
 * per-CPU array, dropspec_last, without a hash lookup.
 *
 * Four entry points share one counting function; user space loads exactly one:
 *   dropspec_tpbtf   tp_btf, kernels whose kfree_skb passes rx_sk (about 6.12 on)
 *   dropspec_tpbtf3  tp_btf, kernels without rx_sk (5.17 .. 6.11)
 *   dropspec_tpbtf2  tp_btf, kernels without drop reasons (before 5.17): every drop is
 *                    counted with DROPSPEC_NO_REASON, attributed to its call site
 *   dropspec_tp      classic tracepoint, field offsets taken from the tracefs format file
 *                    (no `reason` field before 5.17: DROPSPEC_NO_REASON as well)
 * Nothing kernel-assigned is compiled in: reason numbers and tracepoint offsets come in
 * as rodata set by the loader, struct offsets are CO-RE relocations.
 *
 * Which namespace a drop belongs to, and whether anyone watches it, is slots.bpf.h's
 * part, shared with the hook probe; this file adds the drop's key and its stack.
 *
 * events.bpf.h adds counters for a few tracepoints that explain drops (ICMP errors
 * sent, TCP resets, bad checksums, UDP queueing failures), attached one by one.
 */
#include "kernel_types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "drops.h"
#include "slots.bpf.h"

/* GPL-compatible: bpf_probe_read_kernel and bpf_get_current_task are GPL-only helpers. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * Settings written by user space before load (aya EbpfLoader::override_global). The
 * verifier sees them as constants because .rodata is frozen, so unused branches vanish.
 */
/* SKB_NOT_DROPPED_YET and SKB_CONSUMED: frees that are not drops. */
const volatile __u32 cfg_reason_not_dropped = DROPSPEC_ABSENT;
const volatile __u32 cfg_reason_consumed = DROPSPEC_ABSENT;
/* Byte offsets of skb:kfree_skb fields in the classic tracepoint record. */
const volatile __u32 cfg_tp_skbaddr = DROPSPEC_ABSENT;
const volatile __u32 cfg_tp_location = DROPSPEC_ABSENT;
const volatile __u32 cfg_tp_reason = DROPSPEC_ABSENT; /* absent before 5.17 */
const volatile __u32 cfg_tp_rx_sk = DROPSPEC_ABSENT; /* absent before ~6.12 */
/* 0 leaves stacks out (DROPSPEC_STACKS=off), to measure what they cost. */
const volatile __u32 cfg_take_stacks = 1;

/*
 * Every drop's counter: one row per distinct drop, keyed small (24 bytes). A row also
 * counts how many of the drop's stacks this CPU took (DROPSPEC_STACK_SAMPLES at most);
 * past those, the drop becomes the CPU's last drop (dropspec_last), counted there until
 * another one comes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DROPSPEC_MAX_DROP_KEYS);
	__uint(map_flags, DROPSPEC_COUNTER_MAP_FLAGS);
	__type(key, struct dropspec_drop_key);
	__type(value, struct dropspec_drop_value);
} dropspec_drops SEC(".maps");

/* The drops whose stack was taken, counted per (distinct drop, stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DROPSPEC_MAX_DROP_KEYS);
	__uint(map_flags, DROPSPEC_COUNTER_MAP_FLAGS);
	__type(key, struct dropspec_stack_key);
	__type(value, struct dropspec_stack_value);
} dropspec_stacks SEC(".maps");

/* The drop this CPU counted last and its counts not yet in its row (struct dropspec_last). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dropspec_last);
} dropspec_last SEC(".maps");

_Static_assert(__builtin_offsetof(struct dropspec_last, packets) ==
		       sizeof(struct dropspec_drop_key),
	       "dropspec_last begins with a dropspec_drop_key");

/* Whether `last` holds the drop `key`: three 8-byte compares. */
static __always_inline int same_drop(const struct dropspec_drop_key *key,
				     const struct dropspec_last *last)
{
	const __u64 *a = (const __u64 *)key, *b = (const __u64 *)last;
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2];
}

/*
 * Makes `key` this CPU's last drop, counting one drop of it: the previous one's counts
 * go to its dropspec_drops row first (gone if its slot was released meanwhile). `seq`
 * is odd throughout, so user space never adds a half-moved count.
 */
static __always_inline void take_last(struct dropspec_last *last,
				      const struct dropspec_drop_key *key, __u32 len)
{
	__sync_fetch_and_add(&last->seq, 1);
	if (last->packets) {
		struct dropspec_drop_value *row = bpf_map_lookup_elem(&dropspec_drops, last);
		if (row) {
			row->packets += last->packets;
			row->bytes += last->bytes;
		}
	}
	const __u64 *k = (const __u64 *)key;
	__u64 *l = (__u64 *)last;
	l[0] = k[0];
	l[1] = k[1];
	l[2] = k[2];
	last->packets = 1;
	last->bytes = len;
	__sync_fetch_and_add(&last->seq, 1);
}

#define AF_UNIX 1
#define AF_NETLINK 16
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/*
 * IPv4 protocol or IPv6 next header of the packet whose network header starts at
 * head + nh, 0 when the header is unset or unexpected. One read covers both: byte 0
 * (the version), 2-5 (the IPv4 total or IPv6 payload length), 6 (IPv6 next header) and
 * 9 (IPv4 protocol). `data` and `len` are the skb's, to check those lengths against.
 */
static __always_inline __u8 l4_protocol(unsigned char *head, __u16 nh, unsigned char *data,
					__u32 len, __u16 *l3)
{
	/* ~0 is "never set" (skb_network_header_was_set); 0 on a fresh skb is no better. */
	if (nh == 0 || nh == (__u16)~0U)
		return 0;
	__u8 hdr[10];
	if (bpf_probe_read_kernel(hdr, sizeof(hdr), head + nh))
		return 0;
	__u8 version = hdr[0] >> 4;
	/*
	 * skb->protocol is still 0 on some output paths: trust the header's version, but
	 * only where its length field says it covers this skb from the network header on.
	 * An skb dropped before its header was written (a datagram's pending fragments
	 * freed in __ip_flush_pending_frames) holds whatever that memory held before,
	 * often an older packet's header.
	 */
	if (*l3 == 0) {
		__u32 from_nh = len - (__u32)(head + nh - data);
		__u16 length = ((__u16)hdr[version == 4 ? 2 : 4] << 8) |
			       hdr[version == 4 ? 3 : 5];
		if (version == 4 && length == from_nh)
			*l3 = ETH_P_IP;
		else if (version == 6 && length + 40 == from_nh)
			*l3 = ETH_P_IPV6;
	}
	if (*l3 == ETH_P_IP && version == 4)
		return hdr[9];
	if (*l3 == ETH_P_IPV6 && version == 6)
		return hdr[6];
	return 0;
}

/*
 * Frames unwound per drop: DROPSPEC_STACK_DEPTH, plus room for the tracing internals
 * above the call site. On 6.18 those are four under tp_btf (this program,
 * bpf_trace_run4, __bpf_trace_kfree_skb, sk_skb_reason_drop) and one under the classic
 * tracepoint (sk_skb_reason_drop; perf starts the unwind at its caller's registers).
 * Their number is not fixed: 6.16 lists this program twice, and a second program on
 * the tracepoint (any other tool's, or the datapath probe) makes the tracepoint call
 * through __traceiter_kfree_skb, one frame more: six on 6.16, where the old room of
 * four left the call site out and the stack was cut above nf_hook_slow
 * (docs/kernel-findings.md, "6.16.12"). The call site is found by its address
 * (`location`), anywhere in the room; eight frames of room cost nothing measurable,
 * as stacks are only taken for the first drops of each kind
 * (DROPSPEC_STACK_SAMPLES; unwinding is about 0.1 us a frame,
 * harness/examples/probe_cost.rs).
 */
#define DROPSPEC_STACK_SKIP_MAX 8
#define DROPSPEC_STACK_SCAN (DROPSPEC_STACK_SKIP_MAX + DROPSPEC_STACK_DEPTH)

/*
 * Fills key->stack with DROPSPEC_STACK_DEPTH frames starting at the call site: the
 * frame whose return address is `location`, so the stack begins with the function the
 * report already names. When the call site is not among the first frames (a kernel
 * with more tracing frames) the stack is kept from the innermost frame and user space
 * skips the tracing frames by name, leaving fewer than DROPSPEC_STACK_DEPTH.
 */
static __always_inline void take_stack(void *ctx, __u64 location,
				       struct dropspec_stack_key *key)
{
	__u64 frames[DROPSPEC_STACK_SCAN];
	__builtin_memset(frames, 0, sizeof(frames));
	long size = bpf_get_stack(ctx, frames, sizeof(frames), 0);
	if (size <= 0) {
		key->stack_status = DROPSPEC_STACK_NONE;
		count_lost(DROPSPEC_LOST_STACKS);
		return;
	}
	__u32 start = 0;
	key->stack_status = DROPSPEC_STACK_UNTRIMMED;
#pragma unroll
	for (__u32 i = 0; i <= DROPSPEC_STACK_SKIP_MAX; i++) {
		if (frames[i] == location) {
			start = i;
			key->stack_status = DROPSPEC_STACK_FROM_CALLER;
			break;
		}
	}
	if (start > DROPSPEC_STACK_SKIP_MAX) /* for the verifier: frames[start + 7] */
		start = DROPSPEC_STACK_SKIP_MAX;
#pragma unroll
	for (__u32 i = 0; i < DROPSPEC_STACK_DEPTH; i++)
		key->stack[i] = frames[start + i];
}

/*
 * Counts one drop. `btf` is a constant per program: true in the tp_btf programs,
 * whose skb and sockets are BTF-typed and read with direct loads; false in the
 * classic tracepoint program, where every field is a bpf_probe_read_kernel (CO-RE).
 */
static __always_inline void count_drop(void *ctx, struct sk_buff *skb, __u64 location,
				       __u32 reason, struct sock *rx_sk, const _Bool btf)
{
	if (reason == cfg_reason_not_dropped || reason == cfg_reason_consumed)
		return;

	struct sock *sk = btf ? skb->sk : BPF_CORE_READ(skb, sk);
	__u32 *slot = btf ? watched_slot_of_skb_btf(skb, sk, rx_sk, ctx)
			  : watched_slot(netns_of_skb(skb, sk, rx_sk));
	if (!slot)
		return;
	/*
	 * Netlink and unix-socket messages are local IPC, not packets. They are freed with
	 * reasons such as QUEUE_PURGE when their socket closes, which for the harness's own
	 * `ip`/`nft` commands happens in an RCU callback well after the command exited, so
	 * counting them would make exact counts flaky.
	 */
	if (sk) {
		__u16 family = btf ? sk->__sk_common.skc_family
				   : BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family == AF_UNIX || family == AF_NETLINK)
			return;
	}

	struct dropspec_drop_key key;
	__builtin_memset(&key, 0, sizeof(key)); /* padding is part of the hash key */
	key.slot = *slot;
	key.reason = reason;
	key.location = location;
	__u32 len;
	if (btf) {
		len = skb->len;
		key.l3proto = bpf_ntohs(skb->protocol);
		key.l4proto = l4_protocol(skb->head, skb->network_header, skb->data, len,
					  &key.l3proto);
	} else {
		len = BPF_CORE_READ(skb, len);
		key.l3proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
		key.l4proto = l4_protocol(BPF_CORE_READ(skb, head),
					  BPF_CORE_READ(skb, network_header),
					  BPF_CORE_READ(skb, data), len, &key.l3proto);
	}
	key.stack_status = cfg_take_stacks ? DROPSPEC_STACK_SKIPPED : DROPSPEC_STACK_NONE;

	/* A flood's drops: the same as this CPU's last one, two adds. */
	__u32 zero = 0;
	struct dropspec_last *last = bpf_map_lookup_elem(&dropspec_last, &zero);
	if (last && same_drop(&key, last)) {
		last->packets += 1;
		last->bytes += len;
		return;
	}
	/*
	 * Otherwise mostly a drop past its samples (its row counts this CPU's stacks
	 * taken): it becomes the last drop.
	 */
	struct dropspec_drop_value *row = bpf_map_lookup_elem(&dropspec_drops, &key);
	if (row && (!cfg_take_stacks || row->stacks_taken >= DROPSPEC_STACK_SAMPLES)) {
		if (last) {
			take_last(last, &key, len);
		} else {
			row->packets += 1;
			row->bytes += len;
		}
		return;
	}
	if (!cfg_take_stacks) {
		struct dropspec_drop_value first = { .packets = 1, .bytes = len };
		percpu_value(&dropspec_drops, &key, &first, DROPSPEC_LOST_DROPS);
		return;
	}
	/* One of this CPU's first drops of the key: counted with its stack. */
	if (row) {
		row->stacks_taken += 1;
	} else {
		/*
		 * NULL: the row was created with this stack counted, or dropspec_drops is
		 * full (counted lost, which fails the slot's reads). Otherwise another CPU
		 * created it since our lookup, and this CPU's value is still zero.
		 */
		struct dropspec_drop_value first = { .stacks_taken = 1 };
		row = percpu_value(&dropspec_drops, &key, &first, DROPSPEC_LOST_DROPS);
		if (row)
			row->stacks_taken += 1;
	}
	struct dropspec_stack_key skey;
	__builtin_memset(&skey, 0, sizeof(skey));
	skey.slot = key.slot;
	skey.reason = key.reason;
	skey.location = key.location;
	skey.l3proto = key.l3proto;
	skey.l4proto = key.l4proto;
	take_stack(ctx, location, &skey);
	struct dropspec_stack_value sfirst = { .packets = 1, .bytes = len };
	struct dropspec_stack_value *value =
		percpu_value(&dropspec_stacks, &skey, &sfirst, DROPSPEC_LOST_DROPS);
	if (value) {
		value->packets += 1;
		value->bytes += len;
	}
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(dropspec_tpbtf, struct sk_buff *skb, void *location, __u32 reason,
	     struct sock *rx_sk)
{
	count_drop(ctx, skb, (__u64)location, reason, rx_sk, 1);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(dropspec_tpbtf3, struct sk_buff *skb, void *location, __u32 reason)
{
	count_drop(ctx, skb, (__u64)location, reason, 0, 1);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(dropspec_tpbtf2, struct sk_buff *skb, void *location)
{
	count_drop(ctx, skb, (__u64)location, DROPSPEC_NO_REASON, 0, 1);
	return 0;
}

/* Reads one pointer-sized or u32 field of the tracepoint record at a runtime offset. */
static __always_inline __u64 tp_field(void *ctx, __u32 offset, __u32 size)
{
	__u64 v = 0;
	if (offset == DROPSPEC_ABSENT)
		return 0;
	bpf_probe_read_kernel(&v, size, (char *)ctx + offset);
	return v;
}

SEC("tracepoint/skb/kfree_skb")
int dropspec_tp(void *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)tp_field(ctx, cfg_tp_skbaddr, 8);
	__u64 location = tp_field(ctx, cfg_tp_location, 8);
	__u32 reason = cfg_tp_reason == DROPSPEC_ABSENT ? DROPSPEC_NO_REASON
						       : (__u32)tp_field(ctx, cfg_tp_reason, 4);
	struct sock *rx_sk = (struct sock *)tp_field(ctx, cfg_tp_rx_sk, 8);
	if (skb)
		count_drop(ctx, skb, location, reason, rx_sk, 0);
	return 0;
}

#include "events.bpf.h"
