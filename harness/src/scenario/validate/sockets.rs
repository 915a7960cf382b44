//! The sockets of a `[[traffic]]` entry under the scenario's control: when the listener
//! accepts, the send buffer, and socket options by name (`crate::socket_options`).

use std::collections::BTreeMap;

use super::super::model::{Accept, Protocol, SetOption};
use super::super::raw::Spanned;
use super::super::ScenarioError;
use super::{did_you_mean, Validator};
use crate::scenario::Family;
use crate::socket_options;

impl Validator<'_> {
    /// `accept = "never" | "on_arrival"`, squared with the older `receiver` key: a TCP
    /// receiver that never reads never accepts either.
    pub(super) fn accept(
        &self,
        accept: Option<&Spanned<String>>,
        protocol: Protocol,
        reads: bool,
        receiver_given: bool,
    ) -> Result<Accept, ScenarioError> {
        let Some(text) = accept else {
            return Ok(if reads {
                Accept::OnArrival
            } else {
                Accept::Never
            });
        };
        let accept = Accept::parse(text.get_ref()).ok_or_else(|| {
            self.at.error(
                text.span(),
                format!(
                    "unknown accept mode `{}`: use \"never\" or \"on_arrival\"{}",
                    text.get_ref(),
                    did_you_mean(text.get_ref(), &Accept::NAMES)
                ),
            )
        })?;
        if protocol != Protocol::Tcp {
            return Err(self.at.error(
                text.span(),
                "`accept` applies to tcp only: a UDP receiver reads or not (`receiver`)",
            ));
        }
        if receiver_given && (accept == Accept::OnArrival) != reads {
            return Err(self.at.error(
                text.span(),
                "`receiver` and `accept` disagree: for tcp, receiver = \"never_reads\" means accept = \"never\"; keep one of them",
            ));
        }
        Ok(accept)
    }

    /// `sockopts = { SO_MARK = 7 }`: every name from the table, every value in range,
    /// TCP options on TCP sockets only, IPv6 options on IPv6 sockets only.
    pub(super) fn sockopts(
        &self,
        key: &str,
        options: &BTreeMap<Spanned<String>, Spanned<i64>>,
        protocol: Protocol,
        family: Family,
    ) -> Result<Vec<SetOption>, ScenarioError> {
        let mut set = Vec::new();
        for (name, value) in options {
            let option = socket_options::find(name.get_ref()).ok_or_else(|| {
                self.at.error(
                    name.span(),
                    format!(
                        "unknown socket option `{}` in `{key}`{}: dropspec sets the options listed in README \"Socket options\"",
                        name.get_ref(),
                        did_you_mean(name.get_ref(), &socket_options::names())
                    ),
                )
            })?;
            if option.applies.needs_ipv6() && family != Family::Ipv6 {
                let instead = socket_options::ipv4_counterpart(option.name)
                    .map_or(String::new(), |v4| {
                        format!(", or use `{v4}`, its IPv4 twin")
                    });
                return Err(self.at.error(
                    name.span(),
                    format!(
                        "`{}` is an IPv6 option (SOL_IPV6) and this entry's sockets are IPv4: send to an IPv6 address (`family = \"ipv6\"` or an IPv6 `to`){instead}",
                        option.name,
                    ),
                ));
            }
            if option.applies.needs_tcp() && protocol != Protocol::Tcp {
                return Err(self.at.error(
                    name.span(),
                    format!(
                        "`{}` is a TCP option; this entry's sockets are {}",
                        option.name,
                        protocol.as_str()
                    ),
                ));
            }
            let v = *value.get_ref();
            if v < option.min || v > option.max {
                return Err(self.at.error(
                    value.span(),
                    format!(
                        "`{}` takes {} to {}, not {v}",
                        option.name, option.min, option.max
                    ),
                ));
            }
            set.push(SetOption {
                name: option.name.to_owned(),
                level: option.level,
                optname: option.optname,
                // SO_MARK is a u32 the kernel reads through an int.
                value: v as u32 as i32,
            });
        }
        Ok(set)
    }
}
