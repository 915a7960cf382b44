//! Interface statistics from `/proc/net/dev`, read inside the host's namespace: the
//! kernel's own count of what a device dropped, a witness independent of the drop probe.
//!
//! Keys are what `[[expect.counters]]` writes after `link/`: `eth0/tx_dropped`,
//! `eth0/rx_dropped`. `tx_dropped` is the device's `tx_dropped` of `ip -s link`, which
//! the noop qdisc of a device without carrier counts each packet it drops in
//! (`noop_enqueue` → `dev_core_stats_tx_dropped_inc`, measured on 6.18: one per ARP
//! request of `links/end_down`). Only these two columns are kept, and they are left out
//! of snapshots: an expectation names them where they witness a drop.

use std::collections::BTreeMap;

use super::{parse_error, ParseError};

/// The `/proc/net/dev` columns kept, by their index after the interface's colon.
const COLUMNS: [(&str, usize); 2] = [("rx_dropped", 3), ("tx_dropped", 11)];

pub(super) fn parse_proc_net_dev(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut stats = BTreeMap::new();
    // Two header lines, then `  eth0: <8 receive columns> <8 transmit columns>`.
    for (at, line) in text.lines().enumerate().skip(2) {
        let Some((name, values)) = line.split_once(':') else {
            return Err(parse_error(at, "a line without `<interface>:`"));
        };
        let values: Vec<u64> = values
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| parse_error(at, format!("a column that is not a number ({e})")))?;
        if values.len() < 16 {
            return Err(parse_error(at, format!("{} columns, not 16", values.len())));
        }
        for (stat, index) in COLUMNS {
            stats.insert(format!("{}/{stat}", name.trim()), values[index]);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_drop_columns_by_interface() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
eth0:       0       0    0    2    0     0          0         0        0       0    0    3    0     0       0          0\n";
        let stats = parse_proc_net_dev(text).unwrap();
        assert_eq!(stats["eth0/tx_dropped"], 3);
        assert_eq!(stats["eth0/rx_dropped"], 2);
        assert_eq!(stats["lo/tx_dropped"], 0);
        assert_eq!(stats.len(), 4);
    }
}
