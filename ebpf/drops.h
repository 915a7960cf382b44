/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The ABI between the drop probe (drops.bpf.c) and user space (harness/src/probes.rs,
 * which mirrors every struct here as #[repr(C)] with the same size assertions and a
 * unit test that compares the two field by field).
 *
 * Change a struct here and in probes.rs together. Padding is spelled out so both
 * sides agree byte for byte and the probe can zero it (hash keys compare all bytes).
 */
#ifndef DROPSPEC_DROPS_H
#define DROPSPEC_DROPS_H

/* Key of dropspec_drops: one row per (watch slot, reason, call site, protocols). */
struct dropspec_drop_key {
	__u32 slot;     /* WatchSlot id from dropspec_netns, never reused within a process */
	__u32 reason;   /* enum skb_drop_reason value, as the running kernel numbers it */
	__u64 location; /* return address passed to kfree_skb: resolved with kallsyms */
	__u16 l3proto;  /* skb->protocol in host order (0x0800 IPv4, 0x86dd IPv6, ...) */
	__u8 l4proto;   /* IPv4 protocol / IPv6 next header; 0 when there is no network header */
	__u8 pad[5];
};

/* Value of dropspec_drops, one per CPU; user space sums them. */
struct dropspec_drop_value {
	__u64 packets;
	__u64 bytes; /* skb->len at the drop */
};

#define DROPSPEC_MAX_DROP_KEYS 16384
#define DROPSPEC_MAX_NETNS 1024
/* Stands for "the running kernel has no such reason / field" in the rodata settings. */
#define DROPSPEC_ABSENT 0xffffffffu

_Static_assert(sizeof(struct dropspec_drop_key) == 24, "dropspec_drop_key ABI");
_Static_assert(sizeof(struct dropspec_drop_value) == 16, "dropspec_drop_value ABI");

#endif /* DROPSPEC_DROPS_H */
