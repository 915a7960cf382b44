//! Kernel stacks of drops: return addresses to function names, and the place in the
//! packet path ("hook") a stack shows.
//!
//! The probe keeps a few return addresses per drop, starting at the function that
//! called the kfree_skb family (the one the report already names). Here they become
//! names that stay the same across builds of one kernel version: no offsets, and no
//! compiler clone suffixes (`do_softirq.part.0` is `do_softirq`; which functions get
//! cloned is the compiler's choice, not the network stack's).
//!
//! Frames past the softirq entry (`net_rx_action`, `handle_softirqs`, ...) belong to
//! whatever the softirq happened to interrupt, not to the packet, so a stack ends at
//! the first of them.
//!
//! Which functions show up depends on inlining: on one build `ip_rcv_finish` is a frame
//! of its own, on another it is part of `ip_rcv`. The hook is therefore the first frame
//! (innermost first) found in [`HOOKS`], and where a kernel inlined the function that
//! would have told two places apart the hook names the outer one; it never guesses.

use super::kallsyms::Kallsyms;

/// Frames a stack keeps (DROPSPEC_STACK_DEPTH in ebpf/drops.h).
pub const MAX_FRAMES: usize = 8;

/// Functions that say where in the packet path a drop happened, with that place.
/// These are the functions that run the netfilter hooks (`NF_HOOK(...)`) and the
/// functions they continue to after the hook (`ip_local_deliver_finish`), plus the
/// device-level ingress/egress entry points. A transport drop (no socket, bad
/// checksum) thus gets the stage it happened after: `ip_local_deliver_finish`.
/// `ip_rcv_core`/`ip6_rcv_core` check headers before the prerouting hook runs; they
/// are listed as prerouting because kernels that inline them into `ip_rcv` could not
/// tell the two apart anyway.
pub const HOOKS: &[(&str, &str)] = &[
    // IPv4 (net/ipv4/ip_input.c, ip_forward.c, ip_output.c)
    ("ip_rcv", "ipv4 prerouting"),
    ("ip_rcv_core", "ipv4 prerouting"),
    ("ip_rcv_finish", "ipv4 prerouting"),
    ("ip_rcv_finish_core", "ipv4 prerouting"),
    ("ip_list_rcv", "ipv4 prerouting"),
    ("ip_sublist_rcv", "ipv4 prerouting"),
    ("ip_local_deliver", "ipv4 input"),
    ("ip_local_deliver_finish", "ipv4 input"),
    ("ip_forward", "ipv4 forward"),
    ("ip_forward_finish", "ipv4 forward"),
    ("__ip_local_out", "ipv4 output"),
    ("ip_local_out", "ipv4 output"),
    ("ip_output", "ipv4 postrouting"),
    ("ip_mc_output", "ipv4 postrouting"),
    ("ip_finish_output", "ipv4 postrouting"),
    ("__ip_finish_output", "ipv4 postrouting"),
    ("ip_finish_output2", "ipv4 postrouting"),
    // IPv6 (net/ipv6/ip6_input.c, ip6_output.c, output_core.c)
    ("ipv6_rcv", "ipv6 prerouting"),
    ("ip6_rcv_core", "ipv6 prerouting"),
    ("ip6_rcv_finish", "ipv6 prerouting"),
    ("ipv6_list_rcv", "ipv6 prerouting"),
    ("ip6_sublist_rcv", "ipv6 prerouting"),
    ("ip6_input", "ipv6 input"),
    ("ip6_input_finish", "ipv6 input"),
    ("ip6_mc_input", "ipv6 input"),
    ("ip6_forward", "ipv6 forward"),
    ("ip6_forward_finish", "ipv6 forward"),
    ("__ip6_local_out", "ipv6 output"),
    ("ip6_local_out", "ipv6 output"),
    // TCP over IPv6 runs LOCAL_OUT from ip6_xmit itself, not through ip6_local_out.
    ("ip6_xmit", "ipv6 output"),
    ("ip6_output", "ipv6 postrouting"),
    ("ip6_finish_output", "ipv6 postrouting"),
    ("__ip6_finish_output", "ipv6 postrouting"),
    ("ip6_finish_output2", "ipv6 postrouting"),
    // ARP and bridging
    ("arp_rcv", "arp input"),
    ("arp_process", "arp input"),
    ("br_handle_frame", "bridge prerouting"),
    ("br_handle_frame_finish", "bridge input"),
    ("br_forward", "bridge forward"),
    ("__br_forward", "bridge forward"),
    ("br_forward_finish", "bridge postrouting"),
    ("br_dev_queue_push_xmit", "bridge postrouting"),
    // Device level: netfilter ingress/egress chains, tc, qdiscs
    ("nf_hook_ingress", "ingress"),
    ("sch_handle_ingress", "ingress"),
    ("tcx_run", "ingress"),
    ("__netif_receive_skb_core", "ingress"),
    ("nf_hook_egress", "egress"),
    ("sch_handle_egress", "egress"),
    ("__dev_xmit_skb", "egress"),
    ("__dev_queue_xmit", "egress"),
];

/// Frames where softirq processing begins: what lies beyond is the interrupted task.
const SOFTIRQ_ENTRIES: &[&str] = &[
    "net_rx_action",
    "net_tx_action",
    "handle_softirqs",
    "__do_softirq",
    "do_softirq",
    "run_ksoftirqd",
    "tasklet_action_common",
];

/// Functions of the freeing and tracing machinery, above the frame that called
/// kfree_skb. Only needed when the probe could not find the call site in the stack.
fn is_tracing_internal(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "perf_trace_",
        "perf_tp_",
        "trace_event_raw_event_",
        "__traceiter_",
        "trace_kfree_skb",
        "kfree_skb",
        "__kfree_skb",
        "sk_skb_reason_drop",
        "bpf_get_stack",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A symbol without its compiler clone suffix: `.part.0`, `.isra.0`, `.constprop.0`,
/// `.cold`, `.llvm.<hash>` name copies of one source function.
pub fn base_name(symbol: &str) -> &str {
    symbol.split_once('.').map_or(symbol, |(base, _)| base)
}

/// Function names of a stack, innermost first: `frames` are return addresses (zero
/// ends the list); `from_call_site` says frame 0 is the kfree_skb caller, otherwise
/// leading tracing/freeing frames are skipped here. At most [`MAX_FRAMES`], ending at
/// the first softirq entry. Without kallsyms an address is shown in hex.
pub fn symbolize(kallsyms: Option<&Kallsyms>, frames: &[u64], from_call_site: bool) -> Vec<String> {
    let names = frames.iter().take_while(|&&a| a != 0).map(|&addr| {
        // A return address may be one past the last instruction of a function whose
        // final call never returns; the caller is the function containing addr - 1.
        match kallsyms.and_then(|k| k.function_at(addr.saturating_sub(1))) {
            Some(name) => base_name(name).to_owned(),
            None => format!("{addr:#x}"),
        }
    });
    let mut stack = Vec::with_capacity(MAX_FRAMES);
    for name in names.skip_while(|n| !from_call_site && is_tracing_internal(n)) {
        let entry = SOFTIRQ_ENTRIES.contains(&name.as_str());
        stack.push(name);
        if entry || stack.len() == MAX_FRAMES {
            break;
        }
    }
    stack
}

/// The first frame of `stack` (innermost first) that is a known place in the packet
/// path, as listed in [`HOOKS`].
pub fn hook_of(stack: &[String]) -> Option<&'static str> {
    stack
        .iter()
        .find_map(|frame| HOOKS.iter().find(|(f, _)| *f == frame).map(|(f, _)| *f))
}

/// The stage of the path a hook function belongs to: `ipv4 input` for
/// `ip_local_deliver`.
pub fn hook_stage(hook: &str) -> Option<&'static str> {
    HOOKS
        .iter()
        .find(|(f, _)| *f == hook)
        .map(|(_, stage)| *stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses and names as /proc/kallsyms listed them on 6.18 (the saved excerpt
    /// has only a few); the stacks below are the ones bpftrace printed for the same
    /// drops (`kstack` on skb:kfree_skb), as offsets into these functions.
    const KALLSYMS: &str = "\
ffffffff81000000 T _text
ffffffff81100000 T bpf_trace_run4
ffffffff81100200 t __bpf_trace_kfree_skb
ffffffff81e425b0 T __pfx_sk_skb_reason_drop
ffffffff81e425c0 T sk_skb_reason_drop
ffffffff81e42700 T msg_zerocopy_realloc
ffffffff81f62a40 T __pfx_nft_do_chain
ffffffff81f62a50 T nft_do_chain
ffffffff81f63060 T __pfx_nf_tables_core_module_exit
ffffffff81f64000 t nft_do_chain_ipv4
ffffffff81f65000 T nf_hook_slow
ffffffff81f66000 T ip_local_deliver
ffffffff81f67000 T __ip_local_out
ffffffff81f68000 T ip_send_skb
ffffffff81f69000 T __netif_receive_skb_one_core
ffffffff81f6a000 t process_backlog
ffffffff81f6b000 t __napi_poll
ffffffff81f6c000 t net_rx_action
ffffffff81f6d000 t handle_softirqs
ffffffff81f6e000 t do_softirq.part.0
ffffffff81f6f000 T __dev_queue_xmit
ffffffff81f70000 T udp_send_skb
ffffffff81f71000 T udp_sendmsg
ffffffff81f72000 T ip_forward
ffffffffc0203000 t bpf_prog_6deef7357e7b4530_dropspec_tpbtf\t[bpf]
";

    fn kallsyms() -> Kallsyms {
        Kallsyms::parse(KALLSYMS)
    }

    /// An iptables INPUT DROP on loopback, as the probe captures it from the call site.
    const INPUT_DROP: [u64; 8] = [
        0xffffffff81f62a50 + 1000, // nft_do_chain
        0xffffffff81f64000 + 102,  // nft_do_chain_ipv4
        0xffffffff81f65000 + 67,   // nf_hook_slow
        0xffffffff81f66000 + 213,  // ip_local_deliver
        0xffffffff81f69000 + 141,  // __netif_receive_skb_one_core
        0xffffffff81f6a000 + 131,  // process_backlog
        0xffffffff81f6b000 + 49,   // __napi_poll
        0xffffffff81f6c000 + 315,  // net_rx_action
    ];

    #[test]
    fn names_frames_without_offsets() {
        let stack = symbolize(Some(&kallsyms()), &INPUT_DROP, true);
        assert_eq!(
            stack,
            [
                "nft_do_chain",
                "nft_do_chain_ipv4",
                "nf_hook_slow",
                "ip_local_deliver",
                "__netif_receive_skb_one_core",
                "process_backlog",
                "__napi_poll",
                "net_rx_action"
            ]
        );
        assert_eq!(hook_of(&stack), Some("ip_local_deliver"));
        assert_eq!(hook_stage("ip_local_deliver"), Some("ipv4 input"));
    }

    #[test]
    fn output_drop_hook_and_zero_terminated_frames() {
        let frames = [
            0xffffffff81f62a50 + 1000, // nft_do_chain
            0xffffffff81f64000 + 102,
            0xffffffff81f65000 + 67,
            0xffffffff81f67000 + 284, // __ip_local_out
            0xffffffff81f68000 + 30,  // ip_send_skb
            0xffffffff81f70000 + 423, // udp_send_skb
            0,
            0,
        ];
        let stack = symbolize(Some(&kallsyms()), &frames, true);
        assert_eq!(stack.len(), 6);
        assert_eq!(stack[5], "udp_send_skb");
        assert_eq!(hook_of(&stack), Some("__ip_local_out"));
        assert_eq!(hook_stage("__ip_local_out"), Some("ipv4 output"));
    }

    #[test]
    fn stops_at_the_softirq_entry_and_strips_clone_suffixes() {
        let frames = [
            0xffffffff81f69000 + 141, // __netif_receive_skb_one_core
            0xffffffff81f6d000 + 205, // handle_softirqs
            0xffffffff81f6e000 + 59,  // do_softirq.part.0
            0xffffffff81f6f000 + 844, // __dev_queue_xmit: the interrupted sender
        ];
        let stack = symbolize(Some(&kallsyms()), &frames, true);
        assert_eq!(stack, ["__netif_receive_skb_one_core", "handle_softirqs"]);
        // __dev_queue_xmit is beyond the softirq entry: not this packet's egress.
        assert_eq!(hook_of(&stack), None);
        assert_eq!(base_name("do_softirq.part.0"), "do_softirq");
        assert_eq!(base_name("tcp_v4_rcv"), "tcp_v4_rcv");
        assert_eq!(base_name("ip_forward.cold"), "ip_forward");
    }

    #[test]
    fn untrimmed_stacks_skip_the_tracing_frames() {
        let mut frames = vec![
            0xffffffffc0203000 + 0x40, // the probe itself (JIT, [bpf])
            0xffffffff81100000 + 0x60, // bpf_trace_run4
            0xffffffff81100200 + 0x20, // __bpf_trace_kfree_skb
            0xffffffff81e425c0 + 144,  // sk_skb_reason_drop
        ];
        frames.extend_from_slice(&INPUT_DROP[..4]);
        let stack = symbolize(Some(&kallsyms()), &frames, false);
        assert_eq!(stack[0], "nft_do_chain");
        assert_eq!(stack.len(), 4);
        // From the call site nothing is skipped, even a name that looks internal.
        let stack = symbolize(Some(&kallsyms()), &frames[3..], true);
        assert_eq!(stack[0], "sk_skb_reason_drop");
    }

    #[test]
    fn return_address_at_a_function_end_names_the_caller() {
        // One past nft_do_chain's last byte is __pfx_nf_tables_core_module_exit.
        let stack = symbolize(Some(&kallsyms()), &[0xffffffff81f63060], true);
        assert_eq!(stack, ["nft_do_chain"]);
    }

    #[test]
    fn without_kallsyms_frames_are_addresses_and_no_hook() {
        let stack = symbolize(None, &INPUT_DROP[..2], true);
        assert_eq!(stack, ["0xffffffff81f62e38", "0xffffffff81f64066"]);
        assert_eq!(hook_of(&stack), None);
    }

    /// Stacks the probe really captured on 6.18 (fixtures/kernel/*/drop_stacks.txt),
    /// against the kallsyms excerpt of the same boot.
    #[test]
    fn captured_stacks_of_a_saved_kernel() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/kernel/6.18.44-fc-v595");
        let kallsyms =
            Kallsyms::parse(&std::fs::read_to_string(dir.join("kallsyms.excerpt")).unwrap());
        let text = std::fs::read_to_string(dir.join("drop_stacks.txt")).unwrap();
        let mut hooks = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mode, reason, hook) = (fields[0], fields[1], fields[2]);
            let frames: Vec<u64> = fields[3..]
                .iter()
                .map(|f| u64::from_str_radix(f, 16).unwrap())
                .collect();
            let stack = symbolize(Some(&kallsyms), &frames, true);
            let expected = (hook != "-").then_some(hook);
            assert_eq!(hook_of(&stack), expected, "{mode} {reason}: {stack:?}");
            // Frame 0 is the call site: the function the drop is reported in.
            assert_eq!(
                Some(stack[0].as_str()),
                kallsyms.function_at(frames[0]),
                "{line}"
            );
            assert!(stack.iter().all(|f| !f.contains(['+', '.'])), "{stack:?}");
            assert_eq!(
                stack.last().map(String::as_str),
                Some(if hook == "__ip_local_out" {
                    "__sys_sendto"
                } else {
                    "net_rx_action"
                })
            );
            hooks.push(hook);
            if (mode, hook) == ("tracepoint", "ip_forward") {
                assert_eq!(
                    stack,
                    [
                        "nft_do_chain",
                        "nft_do_chain_ipv4",
                        "nf_hook_slow",
                        "ip_forward",
                        "__netif_receive_skb_one_core",
                        "process_backlog",
                        "__napi_poll",
                        "net_rx_action"
                    ]
                );
            }
        }
        for hook in [
            "ip_local_deliver",
            "ip6_input",
            "__ip_local_out",
            "ip_forward",
        ] {
            assert!(hooks.contains(&hook), "no saved stack for {hook}");
        }
    }

    #[test]
    fn every_hook_has_one_stage_and_no_duplicates() {
        for (i, (f, stage)) in HOOKS.iter().enumerate() {
            assert!(!stage.is_empty());
            assert!(!HOOKS[..i].iter().any(|(g, _)| g == f), "{f} listed twice");
            assert!(!SOFTIRQ_ENTRIES.contains(f));
        }
        assert_eq!(hook_stage("ip_forward"), Some("ipv4 forward"));
        assert_eq!(hook_stage("ip6_xmit"), Some("ipv6 output"));
        assert_eq!(hook_stage("nf_hook_slow"), None);
    }
}
