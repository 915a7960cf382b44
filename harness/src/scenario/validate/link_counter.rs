//! `link/<dev>/<stat>` counters: an interface's own statistics (`counters/link.rs`).

use super::{Spanned, Validator};
use crate::scenario::{Host, HostId, Link, ScenarioError};
use crate::vocab::LINK_STATS;

impl Validator<'_> {
    /// `link/eth0/tx_dropped`: `<dev>` must be one of the host's link ends, so a counter
    /// that can never move (a misspelt interface reads as zero) is not asserted by mistake.
    pub(super) fn link_counter(
        &self,
        name: &Spanned<String>,
        host: HostId,
        links: &[Link],
        hosts: &[Host],
    ) -> Result<(), ScenarioError> {
        let text = name.get_ref();
        let stats = LINK_STATS
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let dev = match text.split('/').collect::<Vec<_>>().as_slice() {
            ["link", dev, stat] if !dev.is_empty() && LINK_STATS.contains(stat) => *dev,
            _ => {
                return Err(self.at.error(
                    name.span(),
                    format!("link counter `{text}` should be `link/<dev>/<stat>`, with <stat> one of {stats}"),
                ))
            }
        };
        let ends: Vec<&str> = links
            .iter()
            .flat_map(|l| l.ends.iter())
            .filter(|e| e.host == host)
            .map(|e| e.ifname.as_str())
            .collect();
        if !ends.contains(&dev) {
            return Err(self.at.error(
                name.span(),
                format!(
                    "link counter `{text}`: host `{}` has no link end named `{dev}` (its ends: {})",
                    hosts[host].name,
                    if ends.is_empty() {
                        "none".to_owned()
                    } else {
                        ends.join(", ")
                    }
                ),
            ));
        }
        Ok(())
    }
}
