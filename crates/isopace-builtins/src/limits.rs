//! The open-file limit: raised for the daemon, restored for `exec` children.
//!
//! A daemon that holds many sockets needs more descriptors than the usual soft limit of 1024
//! (a `tcp-proxy` connection holds two sockets), so `isopace run` calls
//! [`raise_open_files`] to raise its soft limit to the hard one, as systemd expects services
//! to do. `exec` children get the limit the process started with, since programs that use
//! `select(2)` break with descriptors above 1023.
//!
//! The original limit is remembered in a process-wide slot rather than passed to each `exec`:
//! the limit itself is process-wide, it is raised once before any component exists, and every
//! child of the process must get the same value back, whichever factory built its component.

use std::{io, sync::OnceLock};

/// The limit before it was raised; set only when it was.
static ORIGINAL: OnceLock<libc::rlimit> = OnceLock::new();

/// Where the soft limit stops when nothing lower is known: Linux's default `fs.nr_open`.
const UNLIMITED_CAP: libc::rlim_t = 1 << 20;

/// The most descriptors the kernel lets a process have, which the soft limit may not exceed.
fn kernel_cap() -> libc::rlim_t {
    if cfg!(target_os = "macos") {
        // OPEN_MAX: macOS refuses more however high the hard limit.
        return 10_240;
    }
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(UNLIMITED_CAP)
}

/// The soft and hard limits on open files.
pub(crate) fn open_files() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Raises this process's soft limit on open files to the hard limit (at most what the kernel
/// allows a process). Returns the soft limit before and after, or `None` when it was already
/// there.
///
/// Call it once, early, before any `exec` component starts: from then on every `exec` child
/// gets the limit from before the raise back. Without the call, children simply inherit the
/// process's limit.
pub fn raise_open_files() -> io::Result<Option<(libc::rlim_t, libc::rlim_t)>> {
    let limit = open_files()?;
    let target = limit.rlim_max.min(kernel_cap());
    if limit.rlim_cur >= target {
        return Ok(None);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = ORIGINAL.set(limit);
    Ok(Some((limit.rlim_cur, target)))
}

/// The limit to give a child: the one the process started with, when it raised its own.
#[cfg(feature = "exec")]
pub(crate) fn for_children() -> Option<libc::rlimit> {
    ORIGINAL.get().copied()
}
