//! Qdisc statistics from `tc -s -j qdisc show`, read inside the host's namespace for a
//! host with a `qdisc` fault.
//!
//! Keys are what `[[expect.counters]]` writes after `qdisc/`: `eth0/drops` for the
//! interface's root qdisc, `eth0/1:1/drops` for a qdisc under class 1:1, and
//! `eth0/ingress/drops` for the ingress (or clsact) qdisc. `noqueue`, the veth default,
//! is left out: it has no queue and counts nothing.
//!
//! Every statistic kept only grows except `backlog` (bytes still queued when read),
//! which a scenario that lets the qdisc drain sees at zero: its delta is what was left
//! in the queue at the end, which is worth seeing when it is not zero.

use std::collections::BTreeMap;

use super::{parse_error, ParseError};

use crate::vocab::QDISC_STATS;

/// tc's name for the ingress and clsact qdiscs' parent.
const INGRESS_PARENT: &str = "ffff:fff1";

pub(super) fn parse_tc_qdisc_json(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let qdiscs: Vec<serde_json::Value> = serde_json::from_str(text.trim())
        .map_err(|e| parse_error(e.line().saturating_sub(1), e.to_string()))?;
    let mut stats = BTreeMap::new();
    for q in qdiscs {
        let field = |name: &str| q.get(name).and_then(serde_json::Value::as_str);
        let (Some(kind), Some(dev)) = (field("kind"), field("dev")) else {
            return Err(parse_error(0, "a qdisc without `kind` or `dev`"));
        };
        if kind == "noqueue" {
            continue;
        }
        let place = if q.get("root").and_then(serde_json::Value::as_bool) == Some(true) {
            dev.to_owned()
        } else {
            match field("parent") {
                Some(INGRESS_PARENT) | None => format!("{dev}/ingress"),
                Some(parent) => format!("{dev}/{parent}"),
            }
        };
        for stat in QDISC_STATS {
            if let Some(value) = q.get(*stat).and_then(serde_json::Value::as_u64) {
                stats.insert(format!("{place}/{stat}"), value);
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_child_and_ingress_qdiscs_have_their_own_keys() {
        // `tc -s -j qdisc show` from iproute2 6.1, a tbf with a pfifo under it.
        let text = r#"[{"kind":"tbf","handle":"1:","dev":"eth0","root":true,"refcnt":2,"options":{"rate":125000,"burst":1600,"lat":11200},"bytes":3168,"packets":4,"drops":7,"overlimits":11,"requeues":0,"backlog":0,"qlen":0},{"kind":"pfifo","handle":"8005:","dev":"eth0","parent":"1:1","options":{"limit":2},"bytes":3168,"packets":4,"drops":7,"overlimits":0,"requeues":0,"backlog":0,"qlen":0},{"kind":"ingress","handle":"ffff:","dev":"eth1","parent":"ffff:fff1","bytes":0,"packets":0,"drops":3,"overlimits":0,"requeues":0,"backlog":0,"qlen":0},{"kind":"noqueue","handle":"0:","dev":"eth2","root":true,"refcnt":2,"bytes":0,"packets":0,"drops":0,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]"#;
        let stats = parse_tc_qdisc_json(text).unwrap();
        assert_eq!(stats["eth0/drops"], 7);
        assert_eq!(stats["eth0/overlimits"], 11);
        assert_eq!(stats["eth0/1:1/drops"], 7);
        assert_eq!(stats["eth1/ingress/drops"], 3);
        assert!(!stats.keys().any(|k| k.starts_with("eth2")));
        assert!(parse_tc_qdisc_json("not json").is_err());
    }
}
