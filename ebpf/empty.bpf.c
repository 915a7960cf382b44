// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * An empty tp_btf program on skb:kfree_skb: what any BPF program on the tracepoint
 * costs before it does anything (the dispatch, its entry and exit). `dropspec bench`
 * floods with it attached as the floor the drop probe's cost is measured against.
 */
#include "kernel_types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("tp_btf/kfree_skb")
int BPF_PROG(dropspec_tp_empty, struct sk_buff *skb, void *location)
{
	return 0;
}
