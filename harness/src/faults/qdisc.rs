//! `[[faults]] qdisc`: the validated qdisc as `tc -batch` input, and what tc says when
//! the kernel has no such qdisc (or, for `ingress`, no u32 classifier or police action).

use crate::kernel_features::{self, KernelFeature};
use crate::scenario::{Qdisc, QdiscKind};

/// The tc commands that install the qdisc as the interface's root (or its ingress
/// qdisc with the policing filter). A pfifo with a rate
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
        // u32 with a zero mask matches every frame of every protocol (ARP too); the
        // police action drops what exceeds the bucket and lets the rest on (`conform`
        // is `ok`: the filter's verdict is the police's).
        QdiscKind::Ingress { police } => format!(
            "qdisc add dev {dev} ingress\n\
             filter add dev {dev} parent ffff: protocol all prio 1 u32 match u32 0 0 \
             action police rate {} burst {} conform-exceed drop/ok\n",
            police.rate, police.burst
        ),
    }
}

/// The short name of the qdisc's kind, for messages.
pub(super) fn kind_name(q: &Qdisc) -> &'static str {
    match q.kind {
        QdiscKind::Pfifo { .. } => "pfifo",
        QdiscKind::Tbf { .. } => "tbf",
        QdiscKind::Netem { .. } => "netem",
        QdiscKind::Ingress { .. } => "ingress",
    }
}

/// The kernel feature tc's error says is missing, if it says one is: the qdisc's kind
/// (`Error: Specified qdisc kind is unknown.`), the u32 classifier (`Error: TC
/// classifier not found.`) or the police action (`Error: Failed to load TC action
/// module.`), each from the kernel's extended ack once module loading found nothing.
/// A pfifo alone needs nothing: it is built in wherever there are qdiscs.
pub(super) fn missing_feature(q: &Qdisc, output: &str) -> Option<&'static KernelFeature> {
    let name = if output.contains("Specified qdisc kind is unknown") {
        match q.kind {
            QdiscKind::Pfifo { rate: None, .. } => return None,
            QdiscKind::Pfifo { rate: Some(_), .. } | QdiscKind::Tbf { .. } => "sch_tbf",
            QdiscKind::Netem { .. } => "sch_netem",
            QdiscKind::Ingress { .. } => "sch_ingress",
        }
    } else if !matches!(q.kind, QdiscKind::Ingress { .. }) {
        return None;
    } else if output.contains("TC classifier not found") {
        "cls_u32"
    } else if output.contains("Failed to load TC action module") {
        "act_police"
    } else {
        return None;
    };
    kernel_features::named(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Police;

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
        let netem = q(QdiscKind::Netem {
            loss: "100%".to_owned(),
            limit: None,
        });
        let unknown = "Error: Specified qdisc kind is unknown.\nCommand failed -:1";
        assert_eq!(missing_feature(&netem, unknown).unwrap().name, "sch_netem");
        assert!(missing_feature(&netem, "Error: something else").is_none());
        let ingress = q(QdiscKind::Ingress {
            police: Police {
                rate: "8kbit".to_owned(),
                burst: 20,
            },
        });
        assert_eq!(
            commands(&ingress),
            "qdisc add dev eth0 ingress\n\
             filter add dev eth0 parent ffff: protocol all prio 1 u32 match u32 0 0 action police rate 8kbit burst 20 conform-exceed drop/ok\n"
        );
        // What tc 6.1 says on the host's 6.18, which has no act_police.
        let no_police = "Error: Failed to load TC action module.\nWe have an error talking to the kernel\nCommand failed -:2";
        assert_eq!(
            missing_feature(&ingress, no_police).unwrap().name,
            "act_police"
        );
        assert_eq!(
            missing_feature(&ingress, "Error: TC classifier not found.")
                .unwrap()
                .name,
            "cls_u32"
        );
        assert_eq!(
            missing_feature(&ingress, unknown).unwrap().name,
            "sch_ingress"
        );
    }
}
