//! Reads that say whether they drained the socket, on Linux: with `TCP_INQ` set, each
//! `recvmsg(2)` reports how many bytes are still queued.
//!
//! A read that returns less than asked usually drained the socket, and the relay then waits
//! for the next readiness event rather than trying a read that finds it empty. But a read
//! also stops short at urgent data (`MSG_OOB`), with bytes queued behind it, and no event
//! comes for those if they arrived with the rest. The queued count tells the two apart, at no
//! cost: without it (`TCP_INQ` refused), the relay reads until the socket says "would block".

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd, RawFd},
    ptr,
};

use tokio::{io::Interest, net::TcpStream};

/// Asks the kernel to report the bytes still queued with every read from `socket` (a
/// listener passes it on to the sockets it accepts). Whether it did.
pub(super) fn enable(socket: &impl AsRawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a `c_int` that lives across the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INQ,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Reads what is queued on `from`, up to the spare capacity of `buffer`, waiting until
/// something is; `Ok(0)` at end of stream.
pub(super) async fn read_some(from: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        from.readable().await?;
        let mut got = 0;
        let result = from.try_io(Interest::READABLE, || {
            let (n, left) = recv(from.as_raw_fd(), buffer.spare_capacity_mut())?;
            got = n;
            if n > 0 && left == Some(0) {
                // Drained: "would block" makes the runtime wait for the next event. The bytes
                // read are in `got`.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: recvmsg initialised the first `n` bytes of the spare capacity.
        unsafe { buffer.set_len(buffer.len() + n) };
        return Ok(n);
    }
}

/// One non-blocking `recvmsg(2)` into `into`: the bytes read, and the bytes still queued when
/// the kernel says (it says 1 at a pending end of stream, so that is read too).
fn recv(fd: RawFd, into: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<libc::c_int>)> {
    let mut iov = libc::iovec {
        iov_base: into.as_mut_ptr().cast(),
        iov_len: into.len(),
    };
    // Room for one control message of a `c_int`, aligned as `cmsghdr` needs.
    let mut control = [0_u64; 4];
    // SAFETY: msghdr is plain data, for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: the message points at a buffer and a control area we own, with their sizes;
    // the kernel writes at most that much into each.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut left = None;
    // SAFETY: the control messages are walked with the kernel's own macros, within the
    // length recvmsg set; the data of TCP_CM_INQ is one `c_int`, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_TCP && (*cmsg).cmsg_type == libc::TCP_CM_INQ {
                left = Some(ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n, left))
}
