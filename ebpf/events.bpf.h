/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Auxiliary tracepoints that say why a packet went nowhere when kfree_skb alone does
 * not: an ICMP error sent in its place (icmp:icmp_send), a TCP reset
 * (tcp:tcp_send_reset), a TCP checksum failure (tcp:tcp_bad_csum), a UDP socket that
 * could not queue it (udp:udp_fail_queue_rcv_skb). Counted per watched namespace in
 * dropspec_events, per CPU, like the drops; nothing is sent to user space per event.
 *
 * Part of drops.bpf.c (included at its end): it counts into the drop probe's slots and
 * lost counters (slots.bpf.h) and shares its tp_field(). Each event has a tp_btf
 * program per argument list the kernel has used, and a classic tracepoint program
 * reading fields at offsets from the tracefs format file; user space loads the one
 * that fits, or none, and says why.
 */
#ifndef DROPSPEC_EVENTS_BPF_H
#define DROPSPEC_EVENTS_BPF_H

/* Offsets of fields in the classic records (events/<category>/<name>/format). */
const volatile __u32 cfg_icmp_send_skbaddr = DROPSPEC_ABSENT;
const volatile __u32 cfg_icmp_send_type = DROPSPEC_ABSENT;
const volatile __u32 cfg_icmp_send_code = DROPSPEC_ABSENT;
const volatile __u32 cfg_tcp_send_reset_skbaddr = DROPSPEC_ABSENT;
const volatile __u32 cfg_tcp_send_reset_skaddr = DROPSPEC_ABSENT;
const volatile __u32 cfg_tcp_send_reset_reason = DROPSPEC_ABSENT; /* absent before ~6.10 */
const volatile __u32 cfg_tcp_bad_csum_skbaddr = DROPSPEC_ABSENT;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DROPSPEC_MAX_EVENT_KEYS);
	__uint(map_flags, DROPSPEC_COUNTER_MAP_FLAGS);
	__type(key, struct dropspec_event_key);
	__type(value, __u64);
} dropspec_events SEC(".maps");

static __always_inline void count_event(struct net *net, __u32 event, __u32 arg0, __u32 arg1)
{
	__u32 *slot = watched_slot(net);
	if (!slot)
		return;
	struct dropspec_event_key key = {
		.slot = *slot,
		.event = event,
		.arg0 = arg0,
		.arg1 = arg1,
	};
	__u64 one = 1;
	__u64 *count = percpu_value(&dropspec_events, &key, &one, DROPSPEC_LOST_EVENTS);
	if (count)
		*count += 1;
}

/*
 * The namespace of an event about a packet and/or a socket. A packet is attributed as
 * a drop is (its device first); a reset sent by a socket without a packet (an active
 * reset: abort, linger) belongs to the socket's namespace.
 */
static __always_inline struct net *event_netns(struct sk_buff *skb, struct sock *sk)
{
	if (skb)
		return netns_of_skb(skb, BPF_CORE_READ(skb, sk), sk);
	if (sk)
		return netns_of_sock(sk);
	return 0;
}

/*
 * icmp:icmp_send(const struct sk_buff *skb_in, int type, int code), recent kernels
 * (6.18 has it). IPv4 only: ICMPv6 errors have no tracepoint. It fires for errors
 * really sent, after rate limiting: measured on 6.18, 300 datagrams to a closed port
 * over a veth gave 6 icmp_send (IcmpOutDestUnreachs 6, IcmpOutRateLimitHost 294);
 * loopback is not limited per host (300 of 300).
 */
SEC("tp_btf/icmp_send")
int BPF_PROG(dropspec_icmp_send_btf, struct sk_buff *skb, int type, int code)
{
	count_event(event_netns(skb, 0), DROPSPEC_EVENT_ICMP_SEND, type, code);
	return 0;
}

SEC("tracepoint/icmp/icmp_send")
int dropspec_icmp_send_tp(void *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)tp_field(ctx, cfg_icmp_send_skbaddr, 8);
	__u32 type = (__u32)tp_field(ctx, cfg_icmp_send_type, 4);
	__u32 code = (__u32)tp_field(ctx, cfg_icmp_send_code, 4);
	count_event(event_netns(skb, 0), DROPSPEC_EVENT_ICMP_SEND, type, code);
	return 0;
}

/* tcp:tcp_send_reset(const struct sock *sk, const struct sk_buff *skb) before ~6.10,
 * then with `enum sk_rst_reason reason`. Either pointer may be NULL. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(dropspec_tcp_send_reset_btf2, struct sock *sk, struct sk_buff *skb)
{
	count_event(event_netns(skb, sk), DROPSPEC_EVENT_TCP_SEND_RESET, DROPSPEC_ABSENT, 0);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(dropspec_tcp_send_reset_btf3, struct sock *sk, struct sk_buff *skb,
	     __u32 reason)
{
	count_event(event_netns(skb, sk), DROPSPEC_EVENT_TCP_SEND_RESET, reason, 0);
	return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int dropspec_tcp_send_reset_tp(void *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)tp_field(ctx, cfg_tcp_send_reset_skbaddr, 8);
	struct sock *sk = (struct sock *)tp_field(ctx, cfg_tcp_send_reset_skaddr, 8);
	__u32 reason = cfg_tcp_send_reset_reason == DROPSPEC_ABSENT ?
			       DROPSPEC_ABSENT :
			       (__u32)tp_field(ctx, cfg_tcp_send_reset_reason, 4);
	count_event(event_netns(skb, sk), DROPSPEC_EVENT_TCP_SEND_RESET, reason, 0);
	return 0;
}

/* tcp:tcp_bad_csum(const struct sk_buff *skb). */
SEC("tp_btf/tcp_bad_csum")
int BPF_PROG(dropspec_tcp_bad_csum_btf, struct sk_buff *skb)
{
	count_event(event_netns(skb, 0), DROPSPEC_EVENT_TCP_BAD_CSUM, 0, 0);
	return 0;
}

SEC("tracepoint/tcp/tcp_bad_csum")
int dropspec_tcp_bad_csum_tp(void *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)tp_field(ctx, cfg_tcp_bad_csum_skbaddr, 8);
	count_event(event_netns(skb, 0), DROPSPEC_EVENT_TCP_BAD_CSUM, 0, 0);
	return 0;
}

/*
 * udp:udp_fail_queue_rcv_skb(int rc, struct sock *sk[, struct sk_buff *skb]). Only a
 * tp_btf program: the classic record carries addresses and ports but no pointer, so
 * it cannot be told which namespace it came from.
 */
SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(dropspec_udp_fail_queue_btf, int rc, struct sock *sk)
{
	if (sk)
		count_event(netns_of_sock(sk), DROPSPEC_EVENT_UDP_FAIL_QUEUE, rc, 0);
	return 0;
}

#endif /* DROPSPEC_EVENTS_BPF_H */
