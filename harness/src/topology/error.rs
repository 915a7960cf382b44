//! What can go wrong while making namespaces and building a topology in them, with a
//! hint a person can act on. A leaf: `netns.rs` returns these errors too, and every
//! runtime module that enters a namespace wraps them.

use std::io;

use super::sysctl::sysctl_path;

/// Something that went wrong while building a topology, naming the host and what was
/// being done to it. The OS or netlink error is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "host `{host}`: cannot create a network namespace{}",
        namespace_hint(source)
    )]
    CreateNamespace {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "host `{host}`: cannot open its namespace file /proc/thread-self/ns/net{}",
        privilege_hint(source)
    )]
    OpenNamespace {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "host `{host}`: cannot enter its network namespace (setns){}",
        privilege_hint(source)
    )]
    EnterNamespace {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "host `{host}`: cannot open a netlink socket in its namespace{}",
        privilege_hint(source)
    )]
    NetlinkSocket {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("host `{host}`: {action} failed{}", netlink_hint(source))]
    Netlink {
        host: String,
        /// What was asked of the kernel: "creating veth `eth0` …", "adding route …".
        action: String,
        /// Boxed to keep this error small enough to wrap and return cheaply.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error(
        "host `{host}`: cannot set sysctl {key} = {value:?} ({}){}",
        sysctl_file(key),
        sysctl_hint(source)
    )]
    Sysctl {
        host: String,
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "host `{host}`: sysctl key `{key}` does not name a file under /proc/sys: \
         use dotted names like net.ipv4.conf.eth0.rp_filter (interface names with dots are not supported)"
    )]
    SysctlKey { host: String, key: String },
    #[error("host `{host}`: a route goes through `{ifname}`, but no link gives the host an interface of that name")]
    UnknownInterface { host: String, ifname: String },
    /// `doing` says whose thread it was: "host `client`", "building scenario `x`".
    #[error("{doing}: cannot start a thread (is the process out of threads or memory?)")]
    Thread {
        doing: String,
        #[source]
        source: io::Error,
    },
    #[error("{doing}: the code running on its thread panicked: {message}")]
    Panicked { doing: String, message: String },
    #[error(
        "cannot start the event loop that drives netlink (is the process out of file descriptors?)"
    )]
    Runtime {
        #[source]
        source: io::Error,
    },
    #[error("host `{host}`: IPv6 address {addr} was added but never became local (waited {waited_ms} ms for its local route)")]
    Ipv6AddressNotReady {
        host: String,
        addr: String,
        waited_ms: u64,
    },
    /// A link end never settled into its operstate (`settle_link` in `topology`).
    #[error("{source}")]
    LinkNotSettled {
        #[source]
        source: io::Error,
    },
}

impl TopologyError {
    /// True when this machine or process cannot build topologies at all (no root, no
    /// network namespaces or veth in the kernel, a read-only /proc/sys), as opposed to a
    /// mistake in the scenario. Tests report this as a visible skip, never as a pass.
    pub fn is_unavailable(&self) -> bool {
        let privilege = |errno: Option<i32>| matches!(errno, Some(libc::EPERM | libc::EACCES));
        match self {
            // EINVAL: the kernel was built without CONFIG_NET_NS.
            TopologyError::CreateNamespace { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::EINVAL | libc::ENOSYS)
            ),
            TopologyError::OpenNamespace { source, .. }
            | TopologyError::EnterNamespace { source, .. }
            | TopologyError::NetlinkSocket { source, .. } => privilege(source.raw_os_error()),
            // EOPNOTSUPP: no veth driver in this kernel.
            TopologyError::Netlink { source, .. } => matches!(
                netlink_errno(source),
                Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP)
            ),
            TopologyError::Sysctl { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::EROFS)
            ),
            TopologyError::SysctlKey { .. }
            | TopologyError::UnknownInterface { .. }
            | TopologyError::Thread { .. }
            | TopologyError::Panicked { .. }
            | TopologyError::Runtime { .. }
            | TopologyError::Ipv6AddressNotReady { .. }
            | TopologyError::LinkNotSettled { .. } => false,
        }
    }
}

fn namespace_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "; creating network namespaces needs root (CAP_SYS_ADMIN): run dropspec as root"
        }
        Some(libc::EINVAL | libc::ENOSYS) => {
            "; this kernel has no network namespaces (CONFIG_NET_NS)"
        }
        Some(libc::ENOSPC) => {
            "; the limit on network namespaces is reached: raise user.max_net_namespaces"
        }
        _ => "",
    }
}

fn privilege_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "; entering network namespaces needs root (CAP_SYS_ADMIN): run dropspec as root"
        }
        Some(libc::EMFILE | libc::ENFILE) => {
            "; the process is out of file descriptors: raise `ulimit -n`"
        }
        _ => "",
    }
}

fn sysctl_file(key: &str) -> String {
    sysctl_path(key).map_or_else(|| "no such file".to_owned(), |p| p.display().to_string())
}

fn netlink_hint(e: &rtnetlink::Error) -> &'static str {
    match netlink_errno(e) {
        Some(libc::EPERM | libc::EACCES) => {
            "; changing network interfaces needs root (CAP_NET_ADMIN): run dropspec as root"
        }
        Some(libc::EEXIST) => {
            "; it already exists: look for a duplicate interface, address or route in the scenario"
        }
        Some(libc::ENETUNREACH) => {
            "; the gateway is on none of this host's subnets: `via` must lie inside one of its link addresses"
        }
        Some(libc::EOPNOTSUPP) => {
            "; the kernel does not support this (veth pairs need CONFIG_VETH)"
        }
        Some(libc::EINVAL | libc::ERANGE) => {
            "; the kernel rejected a value: check the mtu, addresses and prefixes in the scenario"
        }
        _ => "",
    }
}

fn sysctl_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => {
            "; no such sysctl: check the key, and that any interface it names belongs to this host"
        }
        Some(libc::EINVAL) => "; the kernel rejected the value",
        Some(libc::EPERM | libc::EACCES | libc::EROFS) => {
            "; /proc/sys is not writable: run dropspec as root, outside a read-only container"
        }
        _ => "",
    }
}

/// The positive errno of a netlink NACK, if that is what the error is.
fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) if message.raw_code() != 0 => {
            Some(message.raw_code().abs())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small_enough_to_wrap() {
        // Callers wrap TopologyError in their own errors; clippy's result_large_err
        // fires at 128 bytes.
        assert!(std::mem::size_of::<TopologyError>() <= 88);
    }

    #[test]
    fn missing_privileges_make_errors_unavailable() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        let error = TopologyError::CreateNamespace {
            host: "client".to_owned(),
            source: eperm(),
        };
        assert!(error.is_unavailable());
        assert!(
            error.to_string().contains("needs root (CAP_SYS_ADMIN)"),
            "{error}"
        );
        let error = TopologyError::Sysctl {
            host: "client".to_owned(),
            key: "net.ipv4.conf.eth9.rp_filter".to_owned(),
            value: "1".to_owned(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(!error.is_unavailable());
        let text = error.to_string();
        assert!(text.contains("no such sysctl"), "{text}");
        assert!(
            text.contains("/proc/sys/net/ipv4/conf/eth9/rp_filter"),
            "{text}"
        );
    }
}
