//! Auxiliary tracepoints counted next to the drops (ebpf/events.bpf.h): what the
//! kernel did instead of, or before, dropping a packet. A port-unreachable ICMP error,
//! a TCP reset and a failed UDP enqueue each tell a drop's story better than its
//! reason alone.
//!
//! Each event is attached at load time only if the kernel has it, by tp_btf when the
//! kernel's argument list is one the probe was written for, or by the classic
//! tracepoint with field offsets from the tracefs format file. Which one is tried first
//! follows the drop probe's mode; an event neither can attach is reported as
//! unavailable with both reasons ([`super::DropProbe::events_available`]).

use crate::kernel::btf::Btf;
use crate::kernel::tracefs::TracepointFormat;
use std::collections::HashMap;

/// How often one auxiliary event happened in a watched namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventCount {
    /// The tracepoint's name and the arguments it is counted by, with names that do not
    /// depend on the kernel build: `icmp_send type=3 code=3`,
    /// `tcp_send_reset reason=NO_SOCKET` (`tcp_send_reset` on kernels before ~6.10,
    /// whose tracepoint has no reason), `tcp_bad_csum`,
    /// `udp_fail_queue_rcv_skb rc=-ENOBUFS`.
    ///
    /// `icmp_send` counts IPv4 ICMP errors really sent, after rate limiting: between
    /// namespaces over a veth the kernel sends 6 port-unreachables to one host and then
    /// one a second (net.ipv4.icmp_ratelimit), so a burst of 300 datagrams to a closed
    /// port counts 6. Over loopback nothing is limited.
    pub event: String,
    pub count: u64,
}

/// DROPSPEC_EVENT_* in ebpf/drops.h.
pub(super) const ICMP_SEND: u32 = 1;
pub(super) const TCP_SEND_RESET: u32 = 2;
pub(super) const TCP_BAD_CSUM: u32 = 3;
pub(super) const UDP_FAIL_QUEUE: u32 = 4;

/// A field of a classic record the probe reads, and the rodata global its offset goes to.
pub(super) struct RecordField {
    pub field: &'static str,
    pub size: u32,
    pub required: bool,
    pub global: &'static str,
}

/// An auxiliary tracepoint and the programs that can count it.
pub(super) struct EventSpec {
    pub id: u32,
    pub category: &'static str,
    pub name: &'static str,
    /// tp_btf programs by the exact argument types (Btf::tracepoint_arg_types) they
    /// were written for.
    pub btf_programs: &'static [(&'static [&'static str], &'static str)],
    /// The classic program and the record fields it reads, or why there is none.
    pub classic: Result<(&'static str, &'static [RecordField]), &'static str>,
}

const SKB: &str = "struct sk_buff *";
const SOCK: &str = "struct sock *";

pub(super) const EVENTS: &[EventSpec] = &[
    EventSpec {
        id: ICMP_SEND,
        category: "icmp",
        name: "icmp_send",
        btf_programs: &[(&[SKB, "int", "int"], "dropspec_icmp_send_btf")],
        classic: Ok((
            "dropspec_icmp_send_tp",
            &[
                RecordField {
                    field: "skbaddr",
                    size: 8,
                    required: true,
                    global: "cfg_icmp_send_skbaddr",
                },
                RecordField {
                    field: "type",
                    size: 4,
                    required: true,
                    global: "cfg_icmp_send_type",
                },
                RecordField {
                    field: "code",
                    size: 4,
                    required: true,
                    global: "cfg_icmp_send_code",
                },
            ],
        )),
    },
    EventSpec {
        id: TCP_SEND_RESET,
        category: "tcp",
        name: "tcp_send_reset",
        btf_programs: &[
            (&[SOCK, SKB], "dropspec_tcp_send_reset_btf2"),
            (
                &[SOCK, SKB, "enum sk_rst_reason"],
                "dropspec_tcp_send_reset_btf3",
            ),
        ],
        classic: Ok((
            "dropspec_tcp_send_reset_tp",
            &[
                RecordField {
                    field: "skbaddr",
                    size: 8,
                    required: true,
                    global: "cfg_tcp_send_reset_skbaddr",
                },
                RecordField {
                    field: "skaddr",
                    size: 8,
                    required: true,
                    global: "cfg_tcp_send_reset_skaddr",
                },
                RecordField {
                    field: "reason",
                    size: 4,
                    required: false,
                    global: "cfg_tcp_send_reset_reason",
                },
            ],
        )),
    },
    EventSpec {
        id: TCP_BAD_CSUM,
        category: "tcp",
        name: "tcp_bad_csum",
        btf_programs: &[(&[SKB], "dropspec_tcp_bad_csum_btf")],
        classic: Ok((
            "dropspec_tcp_bad_csum_tp",
            &[RecordField {
                field: "skbaddr",
                size: 8,
                required: true,
                global: "cfg_tcp_bad_csum_skbaddr",
            }],
        )),
    },
    EventSpec {
        id: UDP_FAIL_QUEUE,
        category: "udp",
        name: "udp_fail_queue_rcv_skb",
        btf_programs: &[
            (&["int", SOCK], "dropspec_udp_fail_queue_btf"),
            (&["int", SOCK, SKB], "dropspec_udp_fail_queue_btf"),
        ],
        classic: Err(
            "its classic record has addresses and ports but no socket or packet pointer, \
             so the namespace it happened in cannot be told",
        ),
    },
];

/// Every rodata global the classic programs read, so unused ones are set to ABSENT.
pub(super) fn record_globals() -> impl Iterator<Item = &'static str> {
    EVENTS
        .iter()
        .filter_map(|e| e.classic.as_ref().ok())
        .flat_map(|(_, fields)| fields.iter().map(|f| f.global))
}

/// The tp_btf program for this kernel's argument list of `spec`, or why there is none.
/// `arg_types` is Btf::tracepoint_arg_types (None: the BTF has no such tracepoint).
pub(super) fn btf_program(
    spec: &EventSpec,
    arg_types: Option<&[String]>,
) -> Result<&'static str, String> {
    let Some(types) = arg_types else {
        return Err(format!(
            "tp_btf: the kernel's BTF has no btf_trace_{}",
            spec.name
        ));
    };
    spec.btf_programs
        .iter()
        .find(|(expected, _)| {
            expected
                .iter()
                .copied()
                .eq(types.iter().map(String::as_str))
        })
        .map(|&(_, program)| program)
        .ok_or_else(|| {
            let known: Vec<String> = spec
                .btf_programs
                .iter()
                .map(|(t, _)| format!("({})", t.join(", ")))
                .collect();
            format!(
                "tp_btf: the kernel passes ({}), the probe knows {}",
                types.join(", "),
                known.join(" and ")
            )
        })
}

/// A classic program and the (rodata global, record offset) pairs it needs, or why it
/// cannot be used.
pub(super) type ClassicPlan = Result<(&'static str, Vec<(&'static str, u32)>), String>;

/// The classic program and (rodata global, offset) pairs for `spec`, from its format
/// file, or why it cannot be used.
pub(super) fn classic_program(
    spec: &EventSpec,
    format: Result<&TracepointFormat, String>,
) -> ClassicPlan {
    let (program, fields) = spec
        .classic
        .as_ref()
        .map_err(|why| format!("tracepoint: {why}"))?;
    let format = format.map_err(|e| format!("tracepoint: {e}"))?;
    let mut offsets = Vec::new();
    for f in fields.iter() {
        match format.field(f.field) {
            Some(found) if found.size == f.size => offsets.push((f.global, found.offset)),
            Some(found) => {
                return Err(format!(
                    "tracepoint: field `{}` of events/{}/{}/format is {} bytes, the probe \
                     reads {}",
                    f.field, spec.category, spec.name, found.size, f.size
                ))
            }
            None if f.required => {
                return Err(format!(
                    "tracepoint: events/{}/{}/format has no field `{}`",
                    spec.category, spec.name, f.field
                ))
            }
            None => {}
        }
    }
    Ok((program, offsets))
}

/// Names of `enum sk_rst_reason` (6.10 on) without the `SK_RST_REASON_` prefix.
pub(super) fn reset_reasons(btf: &Btf<'_>) -> HashMap<u32, String> {
    let Ok(Some(ty)) = btf.find_enum("sk_rst_reason") else {
        return HashMap::new();
    };
    btf.enumerators(&ty)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let name = e.name.strip_prefix("SK_RST_REASON_").unwrap_or(e.name);
            (e.value as u32, name.to_owned())
        })
        .collect()
}

/// The text of [`EventCount::event`] for one key of dropspec_events.
pub(super) fn event_name(
    event: u32,
    arg0: u32,
    arg1: u32,
    reset_reasons: &HashMap<u32, String>,
) -> String {
    const ABSENT: u32 = u32::MAX;
    match event {
        ICMP_SEND => format!("icmp_send type={} code={}", arg0 as i32, arg1 as i32),
        TCP_SEND_RESET if arg0 == ABSENT => "tcp_send_reset".to_owned(),
        TCP_SEND_RESET => match reset_reasons.get(&arg0) {
            Some(name) => format!("tcp_send_reset reason={name}"),
            None => format!("tcp_send_reset reason={arg0}"),
        },
        TCP_BAD_CSUM => "tcp_bad_csum".to_owned(),
        UDP_FAIL_QUEUE => format!("udp_fail_queue_rcv_skb rc={}", errno_text(arg0 as i32)),
        other => format!("event{other} {} {}", arg0 as i32, arg1 as i32),
    }
}

/// `-ENOBUFS` for -105: names are the same on every architecture, numbers are not.
fn errno_text(rc: i32) -> String {
    let name = match rc.checked_neg() {
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::EMSGSIZE) => "EMSGSIZE",
        Some(libc::ENOTCONN) => "ENOTCONN",
        _ => return rc.to_string(),
    };
    format!("-{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::reasons::tests::{fixture_btf, fixture_kernels};
    use std::path::Path;

    fn fixture_event_format(dir: &Path, spec: &EventSpec) -> Option<TracepointFormat> {
        let path = dir.join(format!("{}_{}.format", spec.category, spec.name));
        let text = std::fs::read_to_string(path).ok()?;
        Some(TracepointFormat::parse(&text).unwrap())
    }

    #[test]
    fn names_say_what_and_by_which_arguments() {
        let mut reasons = HashMap::new();
        reasons.insert(1, "NO_SOCKET".to_owned());
        assert_eq!(
            event_name(ICMP_SEND, 3, 3, &reasons),
            "icmp_send type=3 code=3"
        );
        assert_eq!(
            event_name(TCP_SEND_RESET, 1, 0, &reasons),
            "tcp_send_reset reason=NO_SOCKET"
        );
        assert_eq!(
            event_name(TCP_SEND_RESET, 77, 0, &reasons),
            "tcp_send_reset reason=77"
        );
        assert_eq!(
            event_name(TCP_SEND_RESET, u32::MAX, 0, &reasons),
            "tcp_send_reset"
        );
        assert_eq!(event_name(TCP_BAD_CSUM, 0, 0, &reasons), "tcp_bad_csum");
        assert_eq!(
            event_name(UDP_FAIL_QUEUE, -libc::ENOBUFS as u32, 0, &reasons),
            "udp_fail_queue_rcv_skb rc=-ENOBUFS"
        );
        assert_eq!(
            event_name(UDP_FAIL_QUEUE, -1000i32 as u32, 0, &reasons),
            "udp_fail_queue_rcv_skb rc=-1000"
        );
    }

    /// On the saved 6.18 kernel every event has a tp_btf program, and every event with
    /// a classic program finds its fields at the offsets the format file gives.
    #[test]
    fn saved_kernel_plans() {
        for dir in fixture_kernels() {
            let bytes = fixture_btf(&dir);
            let btf = Btf::parse(&bytes).unwrap();
            for spec in EVENTS {
                let types = btf.tracepoint_arg_types(spec.name).unwrap();
                let btf_choice = btf_program(spec, types.as_deref());
                let format = fixture_event_format(&dir, spec);
                let classic = format
                    .as_ref()
                    .map(|f| classic_program(spec, Ok(f)).map(|(p, _)| p));
                if !dir.ends_with("6.18.44-fc-v595") {
                    continue;
                }
                let expected_btf = match spec.id {
                    ICMP_SEND => "dropspec_icmp_send_btf",
                    TCP_SEND_RESET => "dropspec_tcp_send_reset_btf3",
                    TCP_BAD_CSUM => "dropspec_tcp_bad_csum_btf",
                    _ => "dropspec_udp_fail_queue_btf",
                };
                assert_eq!(btf_choice, Ok(expected_btf), "{}", spec.name);
                let classic = classic.expect("6.18 has every format file saved");
                if spec.id == UDP_FAIL_QUEUE {
                    assert!(classic.unwrap_err().contains("no socket or packet pointer"));
                } else {
                    assert!(classic.is_ok(), "{}: {classic:?}", spec.name);
                }
            }
            let reasons = reset_reasons(&btf);
            if dir.ends_with("6.18.44-fc-v595") {
                assert_eq!(reasons.get(&1).map(String::as_str), Some("NO_SOCKET"));
            }
        }
    }

    #[test]
    fn classic_offsets_on_6_18() {
        let dir = fixture_kernels()
            .into_iter()
            .find(|d| d.ends_with("6.18.44-fc-v595"))
            .unwrap();
        let spec = &EVENTS[1];
        assert_eq!(spec.name, "tcp_send_reset");
        let format = fixture_event_format(&dir, spec).unwrap();
        let (program, offsets) = classic_program(spec, Ok(&format)).unwrap();
        assert_eq!(program, "dropspec_tcp_send_reset_tp");
        assert_eq!(
            offsets,
            vec![
                ("cfg_tcp_send_reset_skbaddr", 8),
                ("cfg_tcp_send_reset_skaddr", 16),
                ("cfg_tcp_send_reset_reason", 28)
            ]
        );
        // A kernel before ~6.10: no reason field, still usable.
        let old = TracepointFormat {
            fields: format
                .fields
                .iter()
                .filter(|f| f.name != "reason")
                .cloned()
                .collect(),
            ..format.clone()
        };
        assert_eq!(classic_program(spec, Ok(&old)).unwrap().1.len(), 2);
        let icmp = fixture_event_format(&dir, &EVENTS[0]).unwrap();
        assert_eq!(
            classic_program(&EVENTS[0], Ok(&icmp)).unwrap().1,
            vec![
                ("cfg_icmp_send_skbaddr", 8),
                ("cfg_icmp_send_type", 16),
                ("cfg_icmp_send_code", 20)
            ]
        );
        let err = classic_program(&EVENTS[0], Err("no tracefs".into())).unwrap_err();
        assert_eq!(err, "tracepoint: no tracefs");
    }

    #[test]
    fn unknown_argument_lists_are_refused_with_both_shapes() {
        let spec = &EVENTS[1];
        let types = vec!["struct sock *".to_owned()];
        let err = btf_program(spec, Some(&types)).unwrap_err();
        assert!(err.contains("the kernel passes (struct sock *)"), "{err}");
        assert!(err.contains("(struct sock *, struct sk_buff *, enum sk_rst_reason)"));
        assert!(btf_program(spec, None)
            .unwrap_err()
            .contains("no btf_trace_tcp_send_reset"));
        assert!(record_globals().any(|g| g == "cfg_tcp_bad_csum_skbaddr"));
    }
}
