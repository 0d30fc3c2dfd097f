//! The open-file limit. A daemon that holds many sockets needs more descriptors than the
//! usual soft limit of 1024 (a `tcp-proxy` connection holds six), so `isopace run` raises its
//! soft limit to the hard one, as systemd expects services to do. `exec` children get the
//! limit isopace started with, since programs that use `select(2)` break with descriptors
//! above 1023.

use std::{io, sync::OnceLock};

/// The limit before it was raised; set only when it was.
static ORIGINAL: OnceLock<libc::rlimit> = OnceLock::new();

/// Where the soft limit stops when the hard limit is unlimited: Linux's default
/// `fs.nr_open`, above which the kernel refuses the limit.
const UNLIMITED_CAP: libc::rlim_t = 1 << 20;

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

/// Raises the soft limit on open files to the hard limit. Returns the soft limit before and
/// after, or `None` when it was already there.
pub(crate) fn raise_open_files() -> io::Result<Option<(libc::rlim_t, libc::rlim_t)>> {
    let limit = open_files()?;
    let mut target = limit.rlim_max.min(UNLIMITED_CAP);
    if cfg!(target_os = "macos") {
        // macOS refuses more than OPEN_MAX however high the hard limit.
        target = target.min(10_240);
    }
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

/// The limit to give a child: the one isopace started with, when it raised its own.
pub(crate) fn for_children() -> Option<libc::rlimit> {
    ORIGINAL.get().copied()
}
