//! One anonymous network namespace, and running code inside it.
//!
//! A namespace belongs to a *thread*, not to the process. [`Netns::run`] moves the
//! calling thread into the namespace for the length of one closure and back into the
//! namespace it came from (also when the closure panics), so nothing but that closure
//! ever runs there; no thread is made for it (a new thread costs a scheduling round trip,
//! milliseconds on a loaded machine, and a scenario makes dozens of these calls).
//! [`Netns::command`] enters the namespace in the child process between fork and exec.
//! Code that may run other work while inside (an async worker) must not call `run`.
//!
//! The errors are [`TopologyError`]s: every caller (topology, traffic, packets, counters)
//! already wraps that type. It lives in `topology/error.rs`, which imports nothing but
//! `topology/sysctl.rs`, so no import cycle runs through here.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{setns, unshare, CloneFlags};

use super::error::TopologyError;

/// One anonymous network namespace, alive as long as this value holds its fd.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    inode: u64,
    label: String,
}

impl Netns {
    /// Creates a namespace (the calling thread unshares and comes back); `label` names
    /// it in errors.
    pub fn create(label: &str) -> Result<Netns, TopologyError> {
        let _back = Return::open(label)?;
        Netns::unshare_here(label)
    }

    /// Moves the calling thread into a new namespace and returns that namespace.
    /// Only for threads made for the purpose: the thread stays in the new namespace.
    pub(crate) fn unshare_here(label: &str) -> Result<Netns, TopologyError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| TopologyError::CreateNamespace {
            host: label.to_owned(),
            source: e.into(),
        })?;
        let open_error = |source| TopologyError::OpenNamespace {
            host: label.to_owned(),
            source,
        };
        let file = File::open("/proc/thread-self/ns/net").map_err(open_error)?;
        let inode = file.metadata().map_err(open_error)?.ino();
        Ok(Netns {
            fd: file.into(),
            inode,
            label: label.to_owned(),
        })
    }

    /// The namespace's inode number, as the kernel (and so the eBPF probe) identifies it.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The host name this namespace stands for.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Moves the calling thread into this namespace. Only for threads made for it.
    pub(crate) fn enter_here(&self) -> Result<(), TopologyError> {
        setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|e| TopologyError::EnterNamespace {
            host: self.label.clone(),
            source: e.into(),
        })
    }

    /// Runs `f` on the calling thread inside this namespace, then moves the thread back
    /// to the namespace it was in. A panic in `f` comes back as
    /// [`TopologyError::Panicked`], with the thread back where it was.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, TopologyError> {
        and_back(&format!("host `{}`", self.label), &self.label, || {
            self.enter_here()?;
            Ok(f())
        })?
    }

    /// A command that enters this namespace before it executes, so whatever it changes
    /// (firewall rules, routes) is this host's and never the machine's. If entering
    /// fails, spawning the command fails with that error.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        // The command owns a duplicate of the fd, so it stays valid even if the command
        // is spawned after this Netns is dropped.
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF));
        // SAFETY: the closure runs in the forked child before exec. It only calls
        // setns(2), a plain system call, and builds an io::Error from an errno, which
        // does not allocate; nothing in it takes a lock another thread could hold.
        unsafe {
            command.pre_exec(move || match &fd {
                Ok(fd) => setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from),
                Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
            });
        }
        command
    }
}

/// The namespace a thread stood in before [`Netns::run`] or [`Netns::create`] moved
/// it: dropping this moves the thread back.
struct Return {
    fd: OwnedFd,
}

impl Return {
    fn open(label: &str) -> Result<Return, TopologyError> {
        let file = File::open("/proc/thread-self/ns/net").map_err(|source| {
            TopologyError::OpenNamespace {
                host: label.to_owned(),
                source,
            }
        })?;
        Ok(Return { fd: file.into() })
    }
}

impl Drop for Return {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.fd, CloneFlags::CLONE_NEWNET) {
            // A thread left in a scenario's namespace would do the rest of its work
            // (the next scenario, the report) in the wrong place: stop here instead.
            eprintln!("dropspec: cannot return a thread to its network namespace: {e}");
            std::process::abort();
        }
    }
}

/// An interface name the kernel could hold (`IFNAMSIZ`); anything else is no interface
/// (ENODEV).
pub fn check_interface_name(ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    Ok(())
}

/// A datagram socket made in the calling thread's namespace and an `ifreq` naming
/// `ifname`, for the interface ioctls (SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFHWADDR) on
/// that namespace's interface.
pub fn interface_request(ifname: &str) -> io::Result<(OwnedFd, libc::ifreq)> {
    check_interface_name(ifname)?;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is shorter than IFNAMSIZ (checked), so the zeroed tail terminates it.
    for (to, from) in request.ifr_name.iter_mut().zip(ifname.bytes()) {
        *to = from as libc::c_char;
    }
    Ok((socket, request))
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Runs `f`, which may move the calling thread into other namespaces, on the calling
/// thread, and moves the thread back into the namespace it was in (also when `f`
/// panics, which comes back as [`TopologyError::Panicked`]); `doing` introduces any
/// error, `label` names the namespace in an error opening it.
pub(crate) fn and_back<T, F: FnOnce() -> T>(
    doing: &str,
    label: &str,
    f: F,
) -> Result<T, TopologyError> {
    let back = Return::open(label)?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(back);
    result.map_err(|panic| TopologyError::Panicked {
        doing: doing.to_owned(),
        message: panic_message(panic),
    })
}

/// Runs `f` on a fresh thread named after `name` and waits for it, turning a panic
/// into an error; `doing` introduces any error.
pub(crate) fn on_new_thread<T: Send, F: FnOnce() -> T + Send>(
    doing: &str,
    name: &str,
    f: F,
) -> Result<T, TopologyError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            // Linux keeps 15 bytes of a thread name; std truncates the rest.
            .name(format!("netns {name}"))
            .spawn_scoped(scope, f)
            .map_err(|source| TopologyError::Thread {
                doing: doing.to_owned(),
                source,
            })?;
        thread.join().map_err(|panic| TopologyError::Panicked {
            doing: doing.to_owned(),
            message: panic_message(panic),
        })
    })
}
