//! Who owns a leftover: a process named by its pid and start time, so a pid the kernel
//! has given to another process since is not taken for the owner. A leaf: the reaper
//! (`cleanup`) and the machine-wide settings (`global_sysctls`) both name owners.

/// A process named robustly: a pid alone may have been reused by the time someone reads
/// it back, a pid with its start time (clock ticks after boot, which never repeat for one
/// boot) may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

impl Owner {
    pub fn current() -> Owner {
        let pid = std::process::id() as i32;
        Owner {
            pid,
            // /proc/self is always readable; 0 would only make us look dead to others,
            // which is the safe way to be wrong about a process that is running.
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this very process still runs (not another one given the same pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    /// `<pid>:<start time>`, as records store it.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.pid, self.start_time)
    }

    pub fn decode(text: &str) -> Option<Owner> {
        let (pid, start) = text.trim().split_once(':')?;
        Some(Owner {
            pid: pid.parse().ok()?,
            start_time: start.parse().ok()?,
        })
    }
}

/// Field 22 of /proc/PID/stat, `starttime`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted after its last `)`.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name, so field 22 is the 20th.
    after_name.split_whitespace().nth(19)?.parse().ok()
}
