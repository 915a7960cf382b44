/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The ABI between the drop probe (drops.bpf.c) and user space (harness/src/probes/abi.rs,
 * which mirrors every struct here as #[repr(C)] with the same size assertions and a
 * unit test that compares the two field by field). The watched-namespace map's ABI
 * (DROPSPEC_MAX_NETNS) is in slots.bpf.h, shared with the hook probe.
 *
 * Change a struct here and in abi.rs together. Padding is spelled out so both
 * sides agree byte for byte and the probe can zero it (hash keys compare all bytes).
 */
#ifndef DROPSPEC_DROPS_H
#define DROPSPEC_DROPS_H

/* Return addresses kept per drop, innermost first, starting at the kfree_skb caller. */
#define DROPSPEC_STACK_DEPTH 8

/* How dropspec_drop_key.stack was filled. */
#define DROPSPEC_STACK_FROM_CALLER 0 /* stack[0] is the call site (`location`) */
#define DROPSPEC_STACK_UNTRIMMED 1   /* call site not among the first frames: stack[0] is
				      * the innermost frame, tracing internals included */
#define DROPSPEC_STACK_NONE 2        /* the kernel could not unwind: stack is all zero */
#define DROPSPEC_STACK_SKIPPED 3     /* enough stacks of this drop were taken: none taken */

/*
 * Stacks taken per distinct drop (slot, reason, call site, protocols) and CPU. Unwinding
 * costs about 2.5 us a drop on our machines, several times the rest of the probe: a
 * scenario's few drops all get one, a flood's millions share the first few.
 */
#define DROPSPEC_STACK_SAMPLES 8

/*
 * Key of dropspec_drops: one row per distinct drop (watch slot, reason, call site,
 * protocols). It is what a flood's every drop is hashed by, so it holds no stack: the
 * few drops whose stack is taken are counted in dropspec_stacks instead, by the same
 * fields and their stack (struct dropspec_stack_key).
 */
struct dropspec_drop_key {
	__u32 slot;     /* WatchSlot id from dropspec_netns, never reused within a process */
	__u32 reason;   /* enum skb_drop_reason value, as the running kernel numbers it */
	__u64 location; /* return address passed to kfree_skb: resolved with kallsyms */
	__u16 l3proto;  /* skb->protocol in host order (0x0800 IPv4, 0x86dd IPv6, ...) */
	__u8 l4proto;   /* IPv4 protocol / IPv6 next header; 0 when there is no network header */
	__u8 stack_status; /* DROPSPEC_STACK_SKIPPED, or _NONE with stacks off */
	__u8 pad[4];
};

/*
 * Value of dropspec_drops, one per CPU; user space sums them. packets and bytes count
 * the drops taken without a stack; stacks_taken how many of this CPU's drops of the key
 * were counted in dropspec_stacks instead (DROPSPEC_STACK_SAMPLES at most). A row whose
 * drops all went there has packets 0 and is no row of the report.
 */
struct dropspec_drop_value {
	__u64 packets;
	__u64 bytes; /* skb->len at the drop */
	__u32 stacks_taken;
	__u32 pad;
};

/*
 * Key of dropspec_stacks: a dropspec_drop_key's fields (stack_status one of
 * FROM_CALLER, UNTRIMMED, NONE) and the kernel stack. The stack is in the key itself
 * rather than a STACK_TRACE map id: stack ids collide (a hash bucket per id, -EEXIST on
 * collision), which would make stacks go missing at random, and ids outlive the slots
 * that use them.
 */
struct dropspec_stack_key {
	__u32 slot;
	__u32 reason;
	__u64 location;
	__u16 l3proto;
	__u8 l4proto;
	__u8 stack_status; /* DROPSPEC_STACK_* */
	__u8 pad[4];
	__u64 stack[DROPSPEC_STACK_DEPTH]; /* return addresses, zero past the last frame */
};

/* Value of dropspec_stacks, one per CPU; user space sums them. */
struct dropspec_stack_value {
	__u64 packets;
	__u64 bytes; /* skb->len at the drop */
};

/*
 * Value of dropspec_last, a one-entry per-CPU array: the drop this CPU counted last, if
 * it was past its stacks, and the drops of it counted here since, not yet added to its
 * dropspec_drops row. A flood's drops are all the same drop: each is two adds here,
 * without a hash lookup. Another drop on the CPU first moves these counts to the row
 * of `key`, then takes the entry, with `seq` odd meanwhile: user space reads this
 * array before and after the hash maps and adds these counts to the row only if `seq`
 * was the same even number both times (otherwise it reads again).
 */
struct dropspec_last {
	__u32 slot;     /* key: a dropspec_drop_key, slot 0 (no slot) while unused */
	__u32 reason;
	__u64 location;
	__u16 l3proto;
	__u8 l4proto;
	__u8 stack_status;
	__u8 pad[4];
	__u64 packets;
	__u64 bytes;
	__u32 seq;
	__u32 pad2;
};

/* Auxiliary tracepoints counted next to the drops (dropspec_event_key.event). */
#define DROPSPEC_EVENT_ICMP_SEND 1      /* icmp:icmp_send; arg0 = type, arg1 = code */
#define DROPSPEC_EVENT_TCP_SEND_RESET 2 /* tcp:tcp_send_reset; arg0 = enum sk_rst_reason */
#define DROPSPEC_EVENT_TCP_BAD_CSUM 3   /* tcp:tcp_bad_csum */
#define DROPSPEC_EVENT_UDP_FAIL_QUEUE 4 /* udp:udp_fail_queue_rcv_skb; arg0 = rc */

/* Key of dropspec_events; the value is a per-CPU __u64 count. */
struct dropspec_event_key {
	__u32 slot;
	__u32 event; /* DROPSPEC_EVENT_* */
	__u32 arg0;  /* event-specific (see above), DROPSPEC_ABSENT when the kernel lacks it */
	__u32 arg1;
};

#define DROPSPEC_MAX_DROP_KEYS 16384
#define DROPSPEC_MAX_EVENT_KEYS 4096
/* Stands for "the running kernel has no such reason / field" in the rodata settings. */
#define DROPSPEC_ABSENT 0xffffffffu
/*
 * dropspec_drop_key.reason on a kernel whose kfree_skb passes no reason (before 5.17):
 * the drop is counted and attributed to its call site, the reason is unknowable.
 */
#define DROPSPEC_NO_REASON 0xfffffffeu

/* Indexes of dropspec_lost. */
#define DROPSPEC_LOST_DROPS 0     /* drops not counted: dropspec_drops or _stacks full */
#define DROPSPEC_LOST_EVENTS 1    /* events not counted: dropspec_events full */
#define DROPSPEC_LOST_STACKS 2    /* drops counted without a stack (DROPSPEC_STACK_NONE) */
#define DROPSPEC_LOST_COUNTERS 3

_Static_assert(sizeof(struct dropspec_drop_key) == 24, "dropspec_drop_key ABI");
_Static_assert(sizeof(struct dropspec_drop_value) == 24, "dropspec_drop_value ABI");
_Static_assert(sizeof(struct dropspec_stack_key) == 88, "dropspec_stack_key ABI");
_Static_assert(sizeof(struct dropspec_stack_value) == 16, "dropspec_stack_value ABI");
_Static_assert(sizeof(struct dropspec_last) == 48, "dropspec_last ABI");
_Static_assert(sizeof(struct dropspec_event_key) == 16, "dropspec_event_key ABI");

#endif /* DROPSPEC_DROPS_H */
