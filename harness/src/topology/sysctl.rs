//! Where a per-namespace sysctl lives under /proc/sys.

use std::path::PathBuf;

/// `net.ipv4.conf.eth0.rp_filter` → `/proc/sys/net/ipv4/conf/eth0/rp_filter`.
///
/// Every dot separates path components, so interface names containing dots (VLANs such
/// as `eth0.10`) cannot be addressed. A key that would not stay a plain path under
/// /proc/sys (an empty component, `/`, NUL) is refused.
pub(crate) fn sysctl_path(key: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains(['/', '\0']))
    {
        return None;
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_become_paths_under_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.rp_filter"),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/all/rp_filter"))
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth-0_a.rp_filter"),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/eth-0_a/rp_filter"))
        );
        assert_eq!(
            sysctl_path("net.ipv4.ping_group_range"),
            Some(PathBuf::from("/proc/sys/net/ipv4/ping_group_range"))
        );
    }

    #[test]
    fn sysctl_keys_that_would_leave_their_directory_are_refused() {
        for key in [
            "net..ipv4",
            "net.ipv4.",
            ".net",
            "net.ipv4/../../kernel.x",
            "net.ipv4.conf.a/b.rp_filter",
            "net.\0",
            "",
        ] {
            assert_eq!(sysctl_path(key), None, "{key:?}");
        }
    }
}
