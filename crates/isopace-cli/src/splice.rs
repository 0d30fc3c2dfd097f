//! Zero-copy relaying on Linux: `splice(2)` moves a connection's bytes from one socket into a
//! pipe and from the pipe into the other socket as page references, so the payload is never
//! copied through user space.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr,
};

use tokio::{
    io::{AsyncWrite, AsyncWriteExt, Interest},
    net::TcpStream,
};

/// The pipe size asked for: fewer, larger moves per system call. The kernel may give less
/// (`/proc/sys/fs/pipe-max-size`); the default pipe holds 64 KiB.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// The kernel buffer one direction of a connection moves its bytes through.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes one splice into the empty pipe may ask for.
    capacity: usize,
}

impl Pipe {
    /// A non-blocking pipe, enlarged when the kernel allows. Fails when the process is out of
    /// file descriptors; the caller then copies through a buffer instead.
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into the array, which we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own; on failure the pipe keeps its default size.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
        let size = if size > 0 {
            size
        } else {
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe {
            read,
            write,
            capacity: usize::try_from(size).unwrap_or(0).max(4096),
        })
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both are open descriptors (a socket and a pipe); null offsets mean "the current
    // position", the only valid choice for sockets and pipes.
    let moved = unsafe {
        libc::splice(
            from,
            ptr::null_mut(),
            to,
            ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}

/// Moves bytes from `from` to `to` through `pipe` until `from` reaches end of stream, then
/// shuts down the write side of `to`. Calls `moved` with each batch delivered to `to`.
pub(crate) async fn relay<W>(
    from: &TcpStream,
    mut to: W,
    pipe: &Pipe,
    mut moved: impl FnMut(u64),
) -> io::Result<()>
where
    W: AsyncWrite + AsRef<TcpStream> + Unpin,
{
    let source = from;
    let sink = to.as_ref();
    loop {
        // Fill only an empty pipe: then "would block" can only mean the socket has nothing
        // to read, never that the pipe is full, so the socket's readiness stays truthful.
        source.readable().await?;
        let filled = match source.try_io(Interest::READABLE, || {
            splice(source.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity)
        }) {
            Ok(0) => return to.shutdown().await,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = filled;
        while left > 0 {
            sink.writable().await?;
            match sink.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), sink.as_raw_fd(), left)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    left -= n;
                    moved(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}
