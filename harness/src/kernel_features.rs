//! Kernel features a fault needs that a kernel can be built without (a qdisc kind, a tc
//! classifier or action), by the module name that provides each. A fault that finds one
//! missing says which (the faults' `KernelLacks` error); the verdict skips the
//! scenario, or fails it under `DROPSPEC_REQUIRE_PRIVILEGED=1` unless `DROPSPEC_MAY_LACK`
//! names the feature. A leaf: the policy checks `DROPSPEC_MAY_LACK`'s names against it.

/// One feature: the module that provides it on a modular kernel, and its config option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeature {
    /// The module's name (`sch_netem`), which is also how `DROPSPEC_MAY_LACK` names it.
    pub name: &'static str,
    pub option: &'static str,
}

/// Every feature a fault can find missing.
pub const FEATURES: &[KernelFeature] = &[
    KernelFeature {
        name: "sch_netem",
        option: "CONFIG_NET_SCH_NETEM",
    },
    KernelFeature {
        name: "sch_tbf",
        option: "CONFIG_NET_SCH_TBF",
    },
    KernelFeature {
        name: "sch_ingress",
        option: "CONFIG_NET_SCH_INGRESS",
    },
    KernelFeature {
        name: "cls_u32",
        option: "CONFIG_NET_CLS_U32",
    },
    KernelFeature {
        name: "act_police",
        option: "CONFIG_NET_ACT_POLICE",
    },
];

/// The feature of that module name.
pub fn named(name: &str) -> Option<&'static KernelFeature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// The known names, for messages.
pub fn names() -> Vec<&'static str> {
    FEATURES.iter().map(|f| f.name).collect()
}
