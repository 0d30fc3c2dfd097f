//! Zero-copy relaying on Linux: `splice(2)` moves a connection's bytes from one socket into a
//! pipe and from the pipe into the other socket as page references, so the payload is not
//! copied through user space.
//!
//! Pipes come from a small process-wide pool and are held only while a batch of bytes is in
//! flight, so an idle connection holds none. The kernel charges every pipe's pages to its
//! user (`fs.pipe-user-pages-soft`), and past that limit every new pipe of that user, in any
//! process, is cut to two pages: the pool stays far below it ([`MAX_PIPES`] pipes of
//! [`PIPE_SIZE`]), and when no pipe can be had a batch is copied through a buffer instead.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncWrite, AsyncWriteExt, Interest},
    net::TcpStream,
};

/// Pipes in use or pooled at once, process-wide: 64 pipes of [`PIPE_SIZE`] are 4096 pages, a
/// quarter of the default per-user limit. Beyond them, batches go through a buffer.
const MAX_PIPES: usize = 64;
/// Idle pipes kept for reuse.
const IDLE_PIPES: usize = 16;
/// The pages of a default pipe; a smaller pipe means the user is over its pipe limit.
const DEFAULT_PAGES: usize = 16;
/// The size asked for: a batch moves up to this much with one call each way. Four times the
/// default (with 4 KiB pages) measured about a third more throughput on loopback; a larger
/// one little more. A pipe already larger (64 KiB pages) is left alone.
const PIPE_SIZE: usize = 256 << 10;
/// How long to copy through buffers after a pipe could not be had.
const RETRY_PIPES: Duration = Duration::from_secs(1);
/// The buffer of a batch that cannot be spliced.
const BUFFER: usize = 64 * 1024;
/// The buffer of the read that settles an empty splice.
const PROBE: usize = 4 * 1024;

static POOL: Mutex<Pool> = Mutex::new(Pool {
    idle: Vec::new(),
    retry_at: None,
});
static PIPES: AtomicUsize = AtomicUsize::new(0);
/// Set when the kernel refuses to splice a socket (some sandboxes): every relay copies.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether relays may splice: only while `SIGPIPE` is ignored. A proxy asks once, when it
/// starts, not on every connection. A splice into a socket the
/// peer has closed raises it (unlike `send`, which the runtime calls with `MSG_NOSIGNAL`), and
/// a handler would run on every reset connection. Rust programs ignore it from the start; a
/// program embedding this library might not.
pub(super) fn available() -> bool {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: sigaction is plain data, for which all zeroes is a valid value.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only writes the current one into `current`.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, ptr::null(), &mut current) };
    rc == 0 && current.sa_sigaction == libc::SIG_IGN
}

struct Pool {
    idle: Vec<Pipe>,
    /// After a pipe could not be made: no new one before this.
    retry_at: Option<Instant>,
}

/// A kernel pipe, empty whenever it is in the pool.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes it holds.
    size: usize,
}

impl Pipe {
    /// A non-blocking pipe of [`PIPE_SIZE`] (or the default size, if the kernel will not
    /// enlarge it), or `None` when the process is out of descriptors or its user is over the
    /// pipe limit.
    fn new() -> Option<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into the array, which we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created and nothing else owns them.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
                size: 0,
            }
        };
        let size = |pipe: &Pipe| {
            // SAFETY: F_GETPIPE_SZ only reads the size of a pipe we own.
            usize::try_from(unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_GETPIPE_SZ) })
                .unwrap_or(0)
        };
        if size(&pipe) < PIPE_SIZE {
            // SAFETY: F_SETPIPE_SZ on a pipe we own; on failure the pipe keeps its size.
            unsafe {
                libc::fcntl(
                    pipe.write.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    PIPE_SIZE as libc::c_int,
                )
            };
        }
        let size = size(&pipe);
        // SAFETY: sysconf only reads a system constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if size < DEFAULT_PAGES * page {
            return None;
        }
        Some(Pipe { size, ..pipe })
    }
}

/// A pipe taken from the pool. It goes back only when [`Lease::release`] says it is empty:
/// one dropped mid-batch (an error, an aborted connection) still holds bytes and is closed.
struct Lease(Option<Pipe>);

impl Lease {
    fn take() -> Option<Lease> {
        {
            let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pipe) = pool.idle.pop() {
                return Some(Lease(Some(pipe)));
            }
            match pool.retry_at {
                Some(at) if Instant::now() < at => return None,
                Some(_) => pool.retry_at = None,
                None => {}
            }
        }
        if PIPES.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
            PIPES.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match Pipe::new() {
            Some(pipe) => Some(Lease(Some(pipe))),
            None => {
                PIPES.fetch_sub(1, Ordering::Relaxed);
                // Out of descriptors or over the pipe limit: do not retry on every batch.
                POOL.lock().unwrap_or_else(PoisonError::into_inner).retry_at =
                    Some(Instant::now() + RETRY_PIPES);
                None
            }
        }
    }

    fn pipe(&self) -> &Pipe {
        self.0
            .as_ref()
            .expect("a lease holds its pipe until released")
    }

    /// Returns the (empty) pipe to the pool.
    fn release(mut self) {
        let Some(pipe) = self.0.take() else { return };
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.idle.len() < IDLE_PIPES {
            pool.idle.push(pipe);
        } else {
            drop(pool);
            drop(pipe);
            PIPES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            PIPES.fetch_sub(1, Ordering::Relaxed);
        }
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

/// What one attempt to fill a pipe from the socket found.
enum Fill {
    /// This many bytes are in the pipe.
    Filled(usize),
    /// Nothing moved: the socket may be empty, at end of stream, or at urgent data, where
    /// splice stops (saying "would block", or "end of stream" once a FIN is queued) while
    /// an ordinary read steps over it. A read must tell which.
    Unsure,
}

/// Moves bytes from `from` to `to` until `from` reaches end of stream; the caller passes the
/// end on. Calls `moved` with each batch delivered to `to`.
///
/// A batch goes through a pooled pipe with `splice(2)`; when no pipe is free, and to settle
/// what an empty splice means, it is read into a buffer and written instead.
pub(super) async fn relay<W>(
    from: &TcpStream,
    to: &mut W,
    mut moved: impl FnMut(u64),
) -> io::Result<()>
where
    W: AsyncWrite + AsRef<TcpStream> + Unpin,
{
    let mut buffer = Vec::new();
    loop {
        // Readiness waits and `try_io` use no scheduling budget: without this, a connection
        // whose both sides stay ready would never let its worker run other tasks.
        tokio::task::consume_budget().await;
        from.readable().await?;
        // A reader that stopped reading should not hold a pipe while its buffer is full.
        to.as_ref().writable().await?;
        let lease = if UNSUPPORTED.load(Ordering::Relaxed) {
            None
        } else {
            Lease::take()
        };
        let fill = match &lease {
            // Only an empty pipe is filled: then "would block" cannot mean a full pipe, and
            // the socket's readiness is cleared only by the read below, which is exact.
            Some(lease) => from.try_io(Interest::READABLE, || {
                match splice(
                    from.as_raw_fd(),
                    lease.pipe().write.as_raw_fd(),
                    lease.pipe().size,
                ) {
                    Ok(0) => Ok(Fill::Unsure),
                    Ok(n) => Ok(Fill::Filled(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Unsure),
                    Err(e) => Err(e),
                }
            }),
            None => Ok(Fill::Unsure),
        };
        if let Ok(Fill::Filled(n)) = fill {
            let lease = lease.expect("only a lease fills");
            drain(lease.pipe(), to.as_ref(), n, &mut moved).await?;
            lease.release();
            continue;
        }
        // Nothing went into the pipe: it is still empty.
        let spliced = lease.is_some();
        if let Some(lease) = lease {
            lease.release();
        }
        match fill {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(
                        libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EPERM | libc::EACCES
                    )
                ) =>
            {
                tracing::debug!(error = %e, "splice(2) is refused here; copying through buffers");
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
        // Settling an empty splice usually finds nothing, or a few bytes past an urgent mark:
        // a small buffer does. Without a pipe, the buffer carries the whole batch.
        let wanted = if spliced { PROBE } else { BUFFER };
        if buffer.len() < wanted {
            buffer.resize(wanted, 0);
        }
        match from.try_read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                to.write_all(&buffer[..n]).await?;
                moved(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes the `left` bytes in `pipe` to `sink`.
async fn drain(
    pipe: &Pipe,
    sink: &TcpStream,
    mut left: usize,
    moved: &mut impl FnMut(u64),
) -> io::Result<()> {
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
    Ok(())
}
