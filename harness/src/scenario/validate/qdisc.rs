//! `[[faults]] qdisc = { dev, kind, … }`: each kind takes its own keys, and a key the
//! kind does not take is an error that names the keys it does.

use super::{raw, Spanned, Validator};
use crate::scenario::{
    Fault, FaultKind, Host, HostId, Link, Police, Qdisc, QdiscKind, ScenarioError,
};
use crate::vocab::QDISC_STATS;

/// What each kind takes, for messages.
const KINDS: &str = "`pfifo` (limit, and rate with burst to drain it slowly), `tbf` (rate, burst, limit), `netem` (loss, limit) or `ingress` (police)";

/// Units tc reads in a rate (tc-tbf(8), "RATES").
const RATE_UNITS: &[&str] = &["bit", "kbit", "mbit", "gbit", "bps", "kbps", "mbps", "gbps"];

impl Validator<'_> {
    pub(super) fn qdisc(
        &self,
        spec: Spanned<raw::Qdisc>,
        host: HostId,
        links: &[Link],
        hosts: &[Host],
    ) -> Result<Qdisc, ScenarioError> {
        let span = spec.span();
        let q = spec.into_inner();
        let error = |message: String| self.at.error(span.clone(), message);
        let known = links
            .iter()
            .flat_map(|l| l.ends.iter())
            .any(|e| e.host == host && e.ifname == q.dev);
        if !known {
            return Err(error(format!(
                "qdisc on host `{}` names interface `{}`, which no link gives it",
                hosts[host].name, q.dev
            )));
        }
        let given = [
            ("limit", q.limit.is_some()),
            ("rate", q.rate.is_some()),
            ("burst", q.burst.is_some()),
            ("loss", q.loss.is_some()),
            ("police", q.police.is_some()),
        ];
        let (takes, needs): (&[&str], &[&str]) = match q.kind.as_str() {
            "pfifo" => (&["limit", "rate", "burst"], &[]),
            "tbf" => (&["limit", "rate", "burst"], &["rate", "burst", "limit"]),
            "netem" => (&["limit", "loss"], &["loss"]),
            "ingress" => (&["police"], &["police"]),
            other => return Err(error(format!("unknown qdisc kind `{other}`: use {KINDS}"))),
        };
        for (key, set) in given {
            if set && !takes.contains(&key) {
                return Err(error(format!(
                    "{} `{}` qdisc does not take `{key}`: it takes {}",
                    article(&q.kind),
                    q.kind,
                    list(takes)
                )));
            }
        }
        for key in needs {
            if !given.iter().any(|(k, set)| k == key && *set) {
                return Err(error(format!(
                    "{} `{}` qdisc needs `{key}` (it takes {})",
                    article(&q.kind),
                    q.kind,
                    list(takes)
                )));
            }
        }
        let rate = q
            .rate
            .as_deref()
            .map(|r| check_rate(r).map_err(&error))
            .transpose()?;
        if q.burst == Some(0) || q.police.as_ref().is_some_and(|p| p.burst == 0) {
            return Err(error(
                "`burst` must be a whole number of bytes from 1 (the bucket's size: a packet larger than it is dropped)".to_owned(),
            ));
        }
        let kind = match q.kind.as_str() {
            "pfifo" => {
                if rate.is_some() != q.burst.is_some() {
                    return Err(error(
                        "a `pfifo` with `rate` needs `burst` too (and the other way round): together they drain it through a tbf".to_owned(),
                    ));
                }
                QdiscKind::Pfifo {
                    limit: q.limit,
                    rate: rate.zip(q.burst),
                }
            }
            "tbf" => QdiscKind::Tbf {
                rate: rate.expect("checked above"),
                burst: q.burst.expect("checked above"),
                limit: q.limit.expect("checked above"),
            },
            "ingress" => {
                let police = q.police.expect("checked above");
                QdiscKind::Ingress {
                    police: Police {
                        rate: check_rate(&police.rate)
                            .map_err(|e| error(format!("`police`: {e}")))?,
                        burst: police.burst,
                    },
                }
            }
            _ => QdiscKind::Netem {
                loss: check_loss(q.loss.as_deref().expect("checked above")).map_err(&error)?,
                limit: q.limit,
            },
        };
        Ok(Qdisc { dev: q.dev, kind })
    }
}

impl Validator<'_> {
    /// `qdisc/eth0/drops` (the root qdisc), `qdisc/eth0/1:1/drops` (under a class) or
    /// `qdisc/eth0/ingress/drops`: the interface must carry one of the host's `qdisc`
    /// faults, so a counter that can never move is not asserted by mistake.
    pub(super) fn qdisc_counter(
        &self,
        name: &Spanned<String>,
        host: HostId,
        faults: &[Fault],
        hosts: &[Host],
    ) -> Result<(), ScenarioError> {
        let text = name.get_ref();
        let parts: Vec<&str> = text.split('/').collect();
        let form = || {
            self.at.error(
                name.span(),
                format!(
                    "qdisc counter `{text}` should be `qdisc/<dev>/<stat>` (the root qdisc) or `qdisc/<dev>/<parent>/<stat>` (`1:1`, `ingress`), with <stat> one of {}",
                    list(QDISC_STATS)
                ),
            )
        };
        let (dev, stat) = match parts.as_slice() {
            ["qdisc", dev, stat] | ["qdisc", dev, _, stat] if !dev.is_empty() => (*dev, *stat),
            _ => return Err(form()),
        };
        if !QDISC_STATS.contains(&stat) {
            return Err(form());
        }
        let has_qdisc = faults.iter().any(|f| {
            f.host == host
                && match &f.kind {
                    FaultKind::Qdisc(q) => q.dev == dev,
                    // A `command` fault that runs tc on that interface.
                    FaultKind::Command { argv, .. } => {
                        argv[0] == "tc" && argv.windows(2).any(|w| w[0] == "dev" && w[1] == dev)
                    }
                    _ => false,
                }
        });
        if !has_qdisc {
            return Err(self.at.error(
                name.span(),
                format!(
                    "qdisc counter `{text}`: host `{}` has no `qdisc` fault (nor a `tc` command) on `{dev}`, so its qdisc statistics are not read",
                    hosts[host].name
                ),
            ));
        }
        Ok(())
    }
}

/// "a `tbf`", "an `ingress`".
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "1mbit", "8kbit", "125kbps": a number and a unit tc knows.
fn check_rate(rate: &str) -> Result<String, String> {
    let digits = rate
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rate.len());
    let (number, unit) = rate.split_at(digits);
    let number_ok = number.parse::<f64>().is_ok_and(|n| n > 0.0);
    if number_ok && RATE_UNITS.contains(&unit.to_ascii_lowercase().as_str()) {
        Ok(rate.to_owned())
    } else {
        Err(format!(
            "`rate` must be a positive number with a unit tc reads, like \"1mbit\" ({}), not \"{rate}\"",
            RATE_UNITS.join(", ")
        ))
    }
}

/// "100%", "2.5%": a percentage from 0 to 100.
fn check_loss(loss: &str) -> Result<String, String> {
    let ok = loss
        .strip_suffix('%')
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| (0.0..=100.0).contains(&n));
    if ok {
        Ok(loss.to_owned())
    } else {
        Err(format!(
            "`loss` must be a percentage from 0% to 100%, like \"100%\" (below 100% the count that drops is random), not \"{loss}\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_losses_are_what_tc_reads() {
        assert!(check_rate("1mbit").is_ok());
        assert!(check_rate("8kbit").is_ok());
        assert!(check_rate("1.5mbit").is_ok());
        assert!(check_rate("1 mbit").is_err());
        assert!(check_rate("fast").is_err());
        assert!(check_rate("0mbit").is_err());
        assert!(check_loss("100%").is_ok());
        assert!(check_loss("2.5%").is_ok());
        assert!(check_loss("100").is_err());
        assert!(check_loss("101%").is_err());
    }
}
