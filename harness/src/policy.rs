//! The run's policy: every `DROPSPEC_*` environment variable (and insta's `INSTA_UPDATE`),
//! read in this one place with one rule. A value outside the documented ones is an
//! error naming the allowed values; an unknown `DROPSPEC_*` name is an error too, with
//! the closest known name, because a misspelt `DROPSPEC_REQUIRE_PRIVILEDGED=1` would
//! otherwise turn CI's "no skips" rule off without a word.
//!
//! Front ends (`dropspec run`, `cargo test`, the guest suite) and the probes all read
//! [`Policy::current`]; nothing else calls `std::env::var` for a `DROPSPEC_*` name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// How a run treats its baselines (`snapshots/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineMode {
    /// Compare; a difference fails. Where a person can review it (not in CI), the new
    /// text is written beside the snapshot as `.snap.new` for `cargo insta review`.
    Check,
    /// Compare; never write anything (`INSTA_UPDATE=no`).
    CheckOnly,
    /// Write the report as the baseline it is held against, where the inline
    /// expectations held (`dropspec run --record`, `INSTA_UPDATE=always`).
    Record,
    /// Write a kernel-specific baseline (`snapshots/kernels/<uname -r>/`) where the
    /// report differs from the shared one, for a new kernel (`DROPSPEC_BASELINE=record`).
    RecordKernel,
}

/// Which drop-probe attachment to use (`DROPSPEC_PROBE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeRequest {
    Auto,
    BtfTracepoint,
    ClassicTracepoint,
}

/// How Retina's hook points attach (`DROPSPEC_HOOKS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HooksRequest {
    /// fentry/fexit where the kernel allows it, else kprobes, per function.
    Auto,
    Fexit,
    Kprobe,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `DROPSPEC_REQUIRE_PRIVILEGED=1`: a scenario that cannot run here (no root, a
    /// missing kernel feature or tool) fails instead of being skipped. CI sets it.
    pub require_privileged: bool,
    /// `DROPSPEC_REQUIRE_HOOKS=1`: hook-point expectations that could not be checked
    /// fail instead of being skipped. The guest suite sets it.
    pub require_hooks: bool,
    pub baseline: BaselineMode,
    pub probe: ProbeRequest,
    /// `DROPSPEC_STACKS=off` turns the probe's stack walks off.
    pub stacks: bool,
    pub hooks: HooksRequest,
    /// `DROPSPEC_KERNEL_CACHE`: where `dropspec vm` keeps kernel packages.
    pub kernel_cache: Option<PathBuf>,
    /// `DROPSPEC_BLESS=1`: dropspec's own tests rewrite their expected outputs.
    pub bless: bool,
    /// `DROPSPEC_VM_KERNEL`: set by `dropspec vm` in its guests, the kernel package.
    pub vm_kernel: Option<String>,
    /// Whether this runs in CI (`CI` set to anything but `false`/`0`/empty): no
    /// `.snap.new` files are left for review there.
    pub ci: bool,
    /// `DROPSPEC_REPEAT=N`: each scenario runs N times and fails if any count or outcome
    /// varied (`cargo test`'s `dropspec run --repeat N`).
    pub repeat: u32,
    /// `DROPSPEC_MAY_LACK=sch_netem,act_police`: kernel features (by module name, from
    /// [`crate::kernel_features::FEATURES`]) this kernel is known to lack. A scenario that
    /// needs one of them is a skip that says so, even under
    /// `DROPSPEC_REQUIRE_PRIVILEGED=1`; any other missing feature still fails there.
    /// `.ci/run` sets it for the host's runs only (its kernel has no netem and no police);
    /// `dropspec vm` does not pass it on to a guest.
    pub may_lack: Vec<&'static str>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require_privileged: false,
            require_hooks: false,
            baseline: BaselineMode::Check,
            probe: ProbeRequest::Auto,
            stacks: true,
            hooks: HooksRequest::Auto,
            kernel_cache: None,
            bless: false,
            vm_kernel: None,
            ci: false,
            repeat: 1,
            may_lack: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{name}={value:?} is not one of the values it takes ({allowed}): {what}")]
    BadValue {
        name: &'static str,
        value: String,
        allowed: &'static str,
        what: &'static str,
    },
    #[error("{name} is not a variable dropspec reads{suggestion}; the ones it reads: {known}")]
    UnknownName {
        name: String,
        suggestion: String,
        known: String,
    },
    #[error("DROPSPEC_MAY_LACK names `{value}`, which is not a kernel feature dropspec can find missing{suggestion}; the ones it can: {known} (comma-separated module names)")]
    UnknownFeature {
        value: String,
        suggestion: String,
        known: String,
    },
    #[error("DROPSPEC_BASELINE=record and INSTA_UPDATE={insta} ask for two kinds of recording at once: use one")]
    TwoRecordings { insta: String },
}

/// One documented variable: its name, its values, and what it does.
struct Var {
    name: &'static str,
    allowed: &'static str,
    what: &'static str,
}

/// Every `DROPSPEC_*` variable there is. The README's table is this one.
const VARS: &[Var] = &[
    Var {
        name: "DROPSPEC_REQUIRE_PRIVILEGED",
        allowed: "0, 1",
        what: "1 makes a scenario that cannot run here fail instead of skip",
    },
    Var {
        name: "DROPSPEC_REQUIRE_HOOKS",
        allowed: "0, 1",
        what: "1 makes unchecked hook-point expectations fail instead of skip",
    },
    Var {
        name: "DROPSPEC_BASELINE",
        allowed: "check, record",
        what:
            "record writes kernel-specific baselines where the report differs from the shared one",
    },
    Var {
        name: "DROPSPEC_PROBE",
        allowed: "auto, tp_btf, tracepoint",
        what: "which attachment of the kfree_skb drop probe to use",
    },
    Var {
        name: "DROPSPEC_STACKS",
        allowed: "on, off",
        what: "off turns the drop probe's stack walks off",
    },
    Var {
        name: "DROPSPEC_HOOKS",
        allowed: "auto, fexit, kprobe, off",
        what: "how Retina's hook points attach",
    },
    Var {
        name: "DROPSPEC_REPEAT",
        allowed: "a whole number from 1 to 1000",
        what: "runs each scenario that many times and fails if any count or outcome varied",
    },
    Var {
        name: "DROPSPEC_MAY_LACK",
        allowed: "module names, comma-separated: sch_netem, sch_tbf, sch_ingress, cls_u32, act_police",
        what: "kernel features this kernel is known to lack: a scenario needing one is skipped, saying so, even under DROPSPEC_REQUIRE_PRIVILEGED=1",
    },
    Var {
        name: "DROPSPEC_KERNEL_CACHE",
        allowed: "a directory",
        what: "where dropspec vm keeps kernel packages",
    },
    Var {
        name: "DROPSPEC_BLESS",
        allowed: "0, 1",
        what: "1 rewrites the expected-output files of dropspec's own tests (malformed scenarios, the saved kernels' reason table) after a deliberate change",
    },
    // Read by ci/vm-suite.sh, not by the binaries: listed so a guest passing it on is fine.
    Var {
        name: "DROPSPEC_VM_TIMEOUT",
        allowed: "seconds",
        what: "how long ci/vm-suite.sh gives each guest",
    },
    // Set by `dropspec vm` inside a guest: the kernel package it booted.
    Var {
        name: "DROPSPEC_VM_KERNEL",
        allowed: "a package version",
        what: "set by dropspec vm in its guests",
    },
];

/// Internal markers set by dropspec for its own child processes, not by people.
/// `DROPSPEC_LOCK_FD` hands the cross-process lock to a child (`global_sysctls`), which
/// checks it itself: it names a descriptor of this process, not a setting.
const INTERNAL_PREFIXES: &[&str] = &["DROPSPEC_LOCK_FD", "DROPSPEC_INTERNAL_"];

impl Policy {
    /// The policy of this process, read from its environment once.
    pub fn current() -> Result<&'static Policy, PolicyError> {
        static CURRENT: OnceLock<Result<Policy, PolicyError>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                Policy::from_vars(std::env::vars_os().filter_map(|(k, v)| {
                    Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
                }))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The policy these variables describe (the environment, in [`Policy::current`]).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Policy, PolicyError> {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("DROPSPEC_") || k == "INSTA_UPDATE" || k == "CI")
            .collect();
        for name in vars.keys().filter(|k| k.starts_with("DROPSPEC_")) {
            if !VARS.iter().any(|v| v.name == name)
                && !INTERNAL_PREFIXES.iter().any(|p| name.starts_with(p))
            {
                let known: Vec<&str> = VARS.iter().map(|v| v.name).collect();
                return Err(PolicyError::UnknownName {
                    name: name.clone(),
                    suggestion: crate::suggest::closest(name, &known)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default(),
                    known: known.join(", "),
                });
            }
        }
        // An empty value is the same as unset, as shells make `VAR= cmd` easy to write.
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let ci = get("CI").is_some_and(|v| v != "false" && v != "0");
        let probe = match get("DROPSPEC_PROBE") {
            None | Some("auto") => ProbeRequest::Auto,
            Some("tp_btf" | "tp_btf/kfree_skb") => ProbeRequest::BtfTracepoint,
            Some("tracepoint" | "tracepoint/skb/kfree_skb") => ProbeRequest::ClassicTracepoint,
            Some(other) => return Err(bad("DROPSPEC_PROBE", other)),
        };
        let stacks = match get("DROPSPEC_STACKS") {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(bad("DROPSPEC_STACKS", other)),
        };
        let hooks = match get("DROPSPEC_HOOKS") {
            None | Some("auto") => HooksRequest::Auto,
            Some("fexit") => HooksRequest::Fexit,
            Some("kprobe") => HooksRequest::Kprobe,
            Some("off") => HooksRequest::Off,
            Some(other) => return Err(bad("DROPSPEC_HOOKS", other)),
        };
        let kernel_record = match get("DROPSPEC_BASELINE") {
            None | Some("check") => false,
            Some("record") => true,
            Some(other) => return Err(bad("DROPSPEC_BASELINE", other)),
        };
        // insta's own variable keeps its meaning for people used to `cargo insta`.
        let insta = match get("INSTA_UPDATE") {
            None | Some("auto") => {
                if ci {
                    BaselineMode::CheckOnly
                } else {
                    BaselineMode::Check
                }
            }
            Some("new") => BaselineMode::Check,
            Some("no") => BaselineMode::CheckOnly,
            Some("always" | "unseen" | "force") => BaselineMode::Record,
            Some(other) => {
                return Err(PolicyError::BadValue {
                    name: "INSTA_UPDATE",
                    value: other.to_owned(),
                    allowed: "auto, new, no, always, unseen, force",
                    what: "insta's update mode, which dropspec honours for its snapshots",
                })
            }
        };
        let baseline = match (kernel_record, insta) {
            (true, BaselineMode::Record) => {
                return Err(PolicyError::TwoRecordings {
                    insta: get("INSTA_UPDATE").unwrap_or_default().to_owned(),
                })
            }
            (true, _) => BaselineMode::RecordKernel,
            (false, mode) => mode,
        };
        let repeat = match get("DROPSPEC_REPEAT") {
            None => 1,
            Some(n) => match n.parse::<u32>() {
                Ok(n @ 1..=1000) => n,
                _ => return Err(bad("DROPSPEC_REPEAT", n)),
            },
        };
        let may_lack = match get("DROPSPEC_MAY_LACK") {
            None => Vec::new(),
            Some(list) => may_lack(list)?,
        };
        Ok(Policy {
            require_privileged: flag(get, "DROPSPEC_REQUIRE_PRIVILEGED")?,
            require_hooks: flag(get, "DROPSPEC_REQUIRE_HOOKS")?,
            baseline,
            probe,
            stacks,
            hooks,
            kernel_cache: get("DROPSPEC_KERNEL_CACHE").map(PathBuf::from),
            bless: flag(get, "DROPSPEC_BLESS")?,
            vm_kernel: get("DROPSPEC_VM_KERNEL").map(str::to_owned),
            ci,
            repeat,
            may_lack,
        })
    }

    /// The table of variables, for `--help` texts and the README test.
    pub fn documented() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
        VARS.iter().map(|v| (v.name, v.allowed, v.what))
    }
}

fn var(name: &str) -> &'static Var {
    VARS.iter()
        .find(|v| v.name == name)
        .expect("every variable read is in VARS")
}

fn bad(name: &str, value: &str) -> PolicyError {
    let v = var(name);
    PolicyError::BadValue {
        name: v.name,
        value: value.to_owned(),
        allowed: v.allowed,
        what: v.what,
    }
}

/// `sch_netem,act_police`: each name a known feature (an unknown one is refused with the
/// closest known name: a misspelt name would otherwise fail CI with no word on why).
fn may_lack(list: &str) -> Result<Vec<&'static str>, PolicyError> {
    let known = crate::kernel_features::names();
    let mut names = Vec::new();
    for name in list.split(',').map(str::trim) {
        match crate::kernel_features::named(name) {
            Some(feature) => names.push(feature.name),
            None => {
                return Err(PolicyError::UnknownFeature {
                    value: name.to_owned(),
                    suggestion: crate::suggest::closest(name, &known)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default(),
                    known: known.join(", "),
                })
            }
        }
    }
    Ok(names)
}

fn flag<'a>(get: impl Fn(&str) -> Option<&'a str>, name: &str) -> Result<bool, PolicyError> {
    match get(name) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(bad(name, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(vars: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        Policy::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unset_is_the_default_and_zero_means_off() {
        assert_eq!(policy(&[]).unwrap(), Policy::default());
        let p = policy(&[
            ("DROPSPEC_REQUIRE_HOOKS", "0"),
            ("DROPSPEC_REQUIRE_PRIVILEGED", ""),
        ]);
        assert_eq!(p.unwrap(), Policy::default());
        let p = policy(&[
            ("DROPSPEC_REQUIRE_HOOKS", "1"),
            ("DROPSPEC_REQUIRE_PRIVILEGED", "1"),
        ]);
        let p = p.unwrap();
        assert!(p.require_hooks && p.require_privileged);
    }

    #[test]
    fn values_outside_the_documented_ones_are_errors_naming_them() {
        let e = policy(&[("DROPSPEC_HOOKS", "bogus")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DROPSPEC_HOOKS=\"bogus\" is not one of the values it takes (auto, fexit, kprobe, off): how Retina's hook points attach"
        );
        assert!(policy(&[("DROPSPEC_REQUIRE_PRIVILEGED", "yes")]).is_err());
        assert!(policy(&[("DROPSPEC_BASELINE", "x")]).is_err());
        assert!(policy(&[("INSTA_UPDATE", "sometimes")]).is_err());
    }

    #[test]
    fn a_misspelt_name_is_an_error_with_the_closest_one() {
        let e = policy(&[("DROPSPEC_REQUIRE_PRIVILEDGED", "1")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("(did you mean DROPSPEC_REQUIRE_PRIVILEGED?)"),
            "{e}"
        );
        // dropspec's own markers for its children are not people's variables.
        assert!(policy(&[("DROPSPEC_LOCK_FD", "3")]).is_ok());
    }

    #[test]
    fn may_lack_names_known_features_only() {
        assert!(policy(&[]).unwrap().may_lack.is_empty());
        let p = policy(&[("DROPSPEC_MAY_LACK", "sch_netem, act_police")]).unwrap();
        assert_eq!(p.may_lack, ["sch_netem", "act_police"]);
        let e = policy(&[("DROPSPEC_MAY_LACK", "sch_netem,act_polise")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DROPSPEC_MAY_LACK names `act_polise`, which is not a kernel feature dropspec can find missing (did you mean act_police?); the ones it can: sch_netem, sch_tbf, sch_ingress, cls_u32, act_police (comma-separated module names)"
        );
        // An empty item (a trailing comma) is a mistake too, not "nothing".
        assert!(policy(&[("DROPSPEC_MAY_LACK", "sch_netem,")]).is_err());
        let documented = var("DROPSPEC_MAY_LACK").allowed;
        assert!(
            documented.ends_with(&crate::kernel_features::names().join(", ")),
            "{documented}"
        );
        // The config option is not the name.
        assert!(policy(&[("DROPSPEC_MAY_LACK", "CONFIG_NET_SCH_NETEM")]).is_err());
    }

    #[test]
    fn baseline_modes() {
        assert_eq!(policy(&[]).unwrap().baseline, BaselineMode::Check);
        assert_eq!(
            policy(&[("CI", "true")]).unwrap().baseline,
            BaselineMode::CheckOnly
        );
        assert_eq!(
            policy(&[("INSTA_UPDATE", "always")]).unwrap().baseline,
            BaselineMode::Record
        );
        assert_eq!(
            policy(&[("DROPSPEC_BASELINE", "record")]).unwrap().baseline,
            BaselineMode::RecordKernel
        );
        assert!(policy(&[("DROPSPEC_BASELINE", "record"), ("INSTA_UPDATE", "always")]).is_err());
    }
}
