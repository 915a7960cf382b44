//! `[[faults]] qdisc`: the validated qdisc as `tc -batch` input, and what tc says when
//! the kernel has no such qdisc.

use crate::scenario::{Qdisc, QdiscKind};

/// The tc commands that install the qdisc as the interface's root. A pfifo with a rate
/// is grafted under a tbf of that rate (handle 1:, class 1:1), which is what makes a
/// FIFO fill on a veth: a veth sends as fast as the sender writes, so a FIFO alone
/// never holds more than a packet.
pub(super) fn commands(q: &Qdisc) -> String {
    let dev = &q.dev;
    match &q.kind {
        QdiscKind::Pfifo { limit, rate } => {
            let limit = limit.map(|l| format!(" limit {l}")).unwrap_or_default();
            match rate {
                None => format!("qdisc replace dev {dev} root pfifo{limit}\n"),
                // The tbf's own limit only sizes the bfifo that the pfifo replaces.
                Some((rate, burst)) => format!(
                    "qdisc replace dev {dev} root handle 1: tbf rate {rate} burst {burst} limit 1000000\n\
                     qdisc replace dev {dev} parent 1:1 pfifo{limit}\n"
                ),
            }
        }
        QdiscKind::Tbf { rate, burst, limit } => {
            format!("qdisc replace dev {dev} root tbf rate {rate} burst {burst} limit {limit}\n")
        }
        QdiscKind::Netem { loss, limit } => {
            let limit = limit.map(|l| format!(" limit {l}")).unwrap_or_default();
            format!("qdisc replace dev {dev} root netem loss {loss}{limit}\n")
        }
    }
}

/// The kernel option (and module) that provides the qdisc, for the message when the
/// running kernel lacks it.
pub(super) fn kernel_option(q: &Qdisc) -> &'static str {
    match q.kind {
        QdiscKind::Pfifo { rate: None, .. } => "CONFIG_NET_SCH_FIFO",
        QdiscKind::Pfifo { rate: Some(_), .. } | QdiscKind::Tbf { .. } => {
            "CONFIG_NET_SCH_TBF (module sch_tbf)"
        }
        QdiscKind::Netem { .. } => "CONFIG_NET_SCH_NETEM (module sch_netem)",
    }
}

/// tc's words when the kernel has no qdisc of that kind (`Error: Specified qdisc kind is
/// unknown.`, from the kernel's extended ack).
pub(super) fn says_kind_unknown(output: &str) -> bool {
    output.contains("Specified qdisc kind is unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_like_tc() {
        let q = |kind| Qdisc {
            dev: "eth0".to_owned(),
            kind,
        };
        assert_eq!(
            commands(&q(QdiscKind::Pfifo {
                limit: Some(2),
                rate: None
            })),
            "qdisc replace dev eth0 root pfifo limit 2\n"
        );
        assert_eq!(
            commands(&q(QdiscKind::Pfifo {
                limit: None,
                rate: Some(("1mbit".to_owned(), 1600))
            })),
            "qdisc replace dev eth0 root handle 1: tbf rate 1mbit burst 1600 limit 1000000\n\
             qdisc replace dev eth0 parent 1:1 pfifo\n"
        );
        assert_eq!(
            commands(&q(QdiscKind::Netem {
                loss: "100%".to_owned(),
                limit: None
            })),
            "qdisc replace dev eth0 root netem loss 100%\n"
        );
        assert!(says_kind_unknown(
            "Error: Specified qdisc kind is unknown.\nCommand failed -:1"
        ));
    }
}
