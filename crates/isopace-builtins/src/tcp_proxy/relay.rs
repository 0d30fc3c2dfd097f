//! One proxied connection: the upstream connect, then the bytes relayed both ways until
//! both sides finish, one fails, it idles out or the drain deadline cuts it off.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use isopace_observe::attr;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::OwnedSemaphorePermit,
    task::JoinHandle,
    time::Instant,
};

use super::serve::Shared;
#[cfg(target_os = "linux")]
use super::{congestion, splice};

/// Counts a connection as active while it lives, however it ends (even when aborted).
struct Active<'a>(&'a Shared);

impl<'a> Active<'a> {
    fn new(shared: &'a Shared) -> Self {
        let component = [attr("component", &*shared.component)];
        shared.accepted.add(1, &component);
        shared.active.add(1.0, &component);
        Active(shared)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let component = [attr("component", &*self.0.component)];
        self.0.active.add(-1.0, &component);
        self.0.closed.add(1, &component);
    }
}

pub(super) async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _active = Active::new(&shared);
    let started = Instant::now();
    let connect = tokio::time::timeout(
        shared.connect_timeout,
        TcpStream::connect(shared.upstream.as_str()),
    );
    let upstream = match connect.await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => return shared.connect_failed("connect", peer, &e),
        Err(_) => {
            let e = format!("no connection within {:?}", shared.connect_timeout);
            return shared.connect_failed("timeout", peer, &e);
        }
    };
    shared.connect_seconds.observe(
        started.elapsed().as_secs_f64(),
        &[attr("component", &*shared.component)],
    );
    // Small request/response exchanges should not wait for Nagle's algorithm at the proxy.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    if let Some(name) = &shared.congestion_control {
        for socket in [&client, &upstream] {
            if let Err(e) = congestion::set(socket, name) {
                tracing::debug!(%peer, error = %e, algorithm = %name, "cannot set the congestion control");
            }
        }
    }

    let activity = Arc::new(Activity::new(shared.idle_timeout.is_some()));
    let both = relay_bytes(client, upstream, &shared, &activity);
    let result = match shared.idle_timeout {
        None => both.await,
        Some(limit) => tokio::select! {
            result = both => result,
            () = activity.idle_for(limit) => {
                tracing::debug!(%peer, idle = ?limit, "closing an idle connection");
                Ok(())
            }
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The last time bytes moved on a connection, for the idle timeout.
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds since `start`; `None` when no idle timeout is set, to skip the clock.
    last: Option<AtomicU64>,
}

impl Activity {
    pub(super) fn new(tracked: bool) -> Self {
        Activity {
            start: Instant::now(),
            last: tracked.then(|| AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        if let Some(last) = &self.last {
            last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Completes once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.last.as_ref().map_or(0, |l| l.load(Ordering::Relaxed));
            let deadline = self.start + Duration::from_millis(last) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Copies both ways until both sides have finished sending, or one fails.
///
/// The upstream-to-client direction runs as a task of its own, so on a multi-threaded
/// runtime the two directions of a busy connection move bytes on two cores at once. It is
/// aborted when this future ends or is dropped (an idle timeout, or the drain deadline).
///
/// When either direction fails (a peer resets, say), both sockets close with a reset rather
/// than a FIN, so neither peer can take a truncated stream for a complete one; the same
/// when the drain deadline cuts the connection off.
async fn relay_bytes(
    client: TcpStream,
    upstream: TcpStream,
    shared: &Arc<Shared>,
    activity: &Arc<Activity>,
) -> io::Result<()> {
    let failed = Arc::new(AtomicBool::new(false));
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let mut back = BackTask {
        from: upstream_read,
        to: Sink::new(client_write, &failed, shared),
        _live: Live::new(shared),
    };
    let tally = Tally::new(shared, "to_client");
    let back_activity = Arc::clone(activity);
    let back = AbortOnDrop(tokio::spawn(async move {
        copy(&mut back.from, &mut back.to, &tally, &back_activity).await
    }));
    let mut from = client_read;
    let mut to = Sink::new(upstream_write, &failed, shared);
    let tally = Tally::new(shared, "to_upstream");
    let forth = copy(&mut from, &mut to, &tally, activity);
    tokio::try_join!(forth, back.join())?;
    Ok(())
}

/// What the upstream-to-client task owns, dropped in field order: the halves first, then the
/// count that lets stop return.
struct BackTask {
    from: OwnedReadHalf,
    to: Sink,
    _live: Live,
}

/// One live upstream-to-client task, counted in [`Shared::back_tasks`].
struct Live(Arc<Shared>);

impl Live {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.back_tasks.fetch_add(1, Ordering::AcqRel);
        Live(Arc::clone(shared))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.back_tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.back_tasks_gone.notify_waiters();
        }
    }
}

/// The write half of one direction. Dropped after the connection failed or was cut off, it
/// closes with a reset (`SO_LINGER` 0, and no FIN): dropping a write half normally sends a
/// FIN, which would tell the peer the stream ended cleanly.
struct Sink {
    half: Option<OwnedWriteHalf>,
    failed: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Sink {
    fn new(half: OwnedWriteHalf, failed: &Arc<AtomicBool>, shared: &Arc<Shared>) -> Self {
        Sink {
            half: Some(half),
            failed: Arc::clone(failed),
            shared: Arc::clone(shared),
        }
    }

    fn half(&mut self) -> &mut OwnedWriteHalf {
        self.half
            .as_mut()
            .expect("a sink holds its half until dropped")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let Some(half) = self.half.take() else { return };
        if self.failed.load(Ordering::Acquire) || self.shared.cut_off.load(Ordering::Relaxed) {
            reset_on_close(half.as_ref());
            // The socket closes, with the reset, once its read half is gone too.
            half.forget();
        }
    }
}

/// Makes closing `socket` send a reset (`SO_LINGER` with a zero timeout).
pub(super) fn reset_on_close(socket: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a `linger` that lives across the call, with its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl AbortOnDrop<io::Result<()>> {
    async fn join(mut self) -> io::Result<()> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Per direction; larger buffers measured no faster on loopback, smaller ones slower.
const BUFFER: usize = 64 * 1024;

/// Copies `from` to `to` until EOF, then shuts down the write side of `to`. On an error, marks
/// the connection failed, so both sinks close with a reset.
async fn copy(
    from: &mut OwnedReadHalf,
    to: &mut Sink,
    tally: &Tally,
    activity: &Activity,
) -> io::Result<()> {
    let result = copy_until_eof(from, to.half(), tally, activity).await;
    if result.is_err() {
        to.failed.store(true, Ordering::Release);
    }
    result
}

async fn copy_until_eof(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    tally: &Tally,
    activity: &Activity,
) -> io::Result<()> {
    // Waiting first means a connection that never sends costs no buffer in that direction.
    from.as_ref().readable().await?;
    #[cfg(target_os = "linux")]
    if splice::available() {
        return splice::relay(from.as_ref(), to, |n| {
            activity.touch();
            tally.add(n);
        })
        .await;
    }
    copy_buffered(from, to, tally, activity).await
}

/// [`copy`] through a buffer in user space, where `splice(2)` cannot be used.
pub(super) async fn copy_buffered<R, W>(
    from: &mut R,
    to: &mut W,
    tally: &Tally,
    activity: &Activity,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0; BUFFER];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..n]).await?;
        activity.touch();
        tally.add(n as u64);
    }
}

/// The byte counter of one direction of a connection.
pub(super) struct Tally {
    shared: Arc<Shared>,
    direction: &'static str,
}

impl Tally {
    pub(super) fn new(shared: &Arc<Shared>, direction: &'static str) -> Self {
        Tally {
            shared: Arc::clone(shared),
            direction,
        }
    }

    /// Counts `n` bytes at once, so long-lived connections show up as they go: an update
    /// is a small fraction of the system calls that moved the bytes.
    fn add(&self, n: u64) {
        self.shared.bytes.add(
            n,
            &[
                attr("component", &*self.shared.component),
                attr("direction", self.direction),
            ],
        );
    }
}
