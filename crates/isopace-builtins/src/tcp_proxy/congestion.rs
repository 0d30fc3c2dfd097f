//! Choosing a socket's TCP congestion control algorithm (`TCP_CONGESTION`), on Linux.

use std::{io, os::fd::AsRawFd};

pub(super) fn set(socket: &impl AsRawFd, name: &str) -> io::Result<()> {
    // SAFETY: the option value is `name`'s bytes, valid for the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The algorithm a socket uses.
#[cfg(test)]
pub(super) fn get(socket: &impl AsRawFd) -> io::Result<String> {
    let mut name = [0u8; 16];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `name` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let name = &name[..len as usize];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Why the kernel refused `name`, with what it would take.
pub(super) fn explain(name: &str, error: &io::Error) -> String {
    let file = |which: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/tcp_{which}_congestion_control"))
            .map(|list| list.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    };
    match error.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "congestion_control `{name}`: the kernel has no such algorithm (available: {})",
            file("available")
        ),
        Some(libc::EPERM) => format!(
            "congestion_control `{name}`: not permitted; without CAP_NET_ADMIN only \
             net.ipv4.tcp_allowed_congestion_control may be chosen ({})",
            file("allowed")
        ),
        _ => format!("congestion_control `{name}`: {error}"),
    }
}
