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

use isopace_observe::{Rounded, attr};
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
use tracing::Instrument as _;

#[cfg(target_os = "linux")]
use super::{congestion, inq, splice};
use super::{connect::connect, serve::Shared};

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

/// Relays one accepted connection. `client_nodelay` says the client socket already has
/// `TCP_NODELAY`, inherited from the listener.
pub(super) async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client_nodelay: bool,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _active = Active::new(&shared);
    let started = Instant::now();
    let connect = tokio::time::timeout(shared.connect_timeout, connect(&shared.upstream));
    let upstream = match connect.await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => return shared.connect_failed("connect", peer, &e),
        Err(_) => {
            let e = format!("no connection within {}", Rounded(shared.connect_timeout));
            return shared.connect_failed("timeout", peer, &e);
        }
    };
    shared.connect_seconds.observe(
        started.elapsed().as_secs_f64(),
        &[attr("component", &*shared.component)],
    );
    #[cfg(target_os = "linux")]
    if let Some(name) = &shared.congestion_control {
        for socket in [&client, &upstream] {
            if let Err(e) = congestion::set(socket, name) {
                tracing::debug!(%peer, error = %e, algorithm = %name, "cannot set the congestion control");
            }
        }
    }

    let activity = Arc::new(Activity::new(shared.idle_timeout.is_some()));
    let both = relay_bytes(client, client_nodelay, upstream, &shared, &activity);
    let result = match shared.idle_timeout {
        None => both.await,
        Some(limit) => tokio::select! {
            result = both => result,
            () = activity.idle_for(limit) => {
                tracing::debug!(%peer, idle = %Rounded(limit), "closing an idle connection");
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
/// Both directions start in the connection's task, reading through a small buffer: a short
/// exchange costs no task switch, no pipe and no wake-up of another worker. A direction
/// whose read fills that buffer carries a bulk transfer: from then on it moves bytes with
/// `splice(2)` where it can, and the upstream-to-client direction moves to a task of its own,
/// so on a multi-threaded runtime the two directions of a busy connection move bytes on two
/// cores at once. That task is aborted when this future ends or is dropped (an idle timeout,
/// or the drain deadline).
///
/// The first direction to reach end of stream shuts down the write side of the other socket,
/// so half-closed protocols work; the second does not need to: both ways are done then, and
/// closing the sockets sends the FIN.
///
/// When either direction fails (a peer resets, say), both sockets close with a reset rather
/// than a FIN, so neither peer can take a truncated stream for a complete one; the same
/// when the drain deadline cuts the connection off.
async fn relay_bytes(
    client: TcpStream,
    client_nodelay: bool,
    upstream: TcpStream,
    shared: &Arc<Shared>,
    activity: &Arc<Activity>,
) -> io::Result<()> {
    let ends = Arc::new(Ends::default());
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let mut forth = Direction {
        from: client_read,
        to: Sink::new(upstream_write, false, &ends, shared),
        tally: Tally::new(shared, "to_upstream"),
        activity: Arc::clone(activity),
    };
    let back = Direction {
        from: upstream_read,
        to: Sink::new(client_write, client_nodelay, &ends, shared),
        tally: Tally::new(shared, "to_client"),
        activity: Arc::clone(activity),
    };
    tokio::try_join!(forth.run(), back.run_then_spawn(shared))?;
    Ok(())
}

/// What the two directions of one connection know of each other.
#[derive(Default)]
struct Ends {
    /// Set when a direction fails: both sinks then close with a reset.
    failed: AtomicBool,
    /// Set by the first direction to reach end of stream.
    one_ended: AtomicBool,
}

/// One direction of a connection: what it reads, what it writes to, and its counters.
struct Direction {
    from: OwnedReadHalf,
    to: Sink,
    tally: Tally,
    activity: Arc<Activity>,
}

/// How far a direction got through [`Direction::short`].
enum Progress {
    /// The peer finished sending, and the end was passed on.
    Ended,
    /// A read filled the buffer: the rest goes through [`Direction::bulk`].
    Bulk,
}

impl Direction {
    /// Relays until end of stream, in the current task.
    async fn run(&mut self) -> io::Result<()> {
        let result = match self.short().await {
            Ok(Progress::Ended) => Ok(()),
            Ok(Progress::Bulk) => self.bulk().await,
            Err(e) => Err(e),
        };
        self.failed_if(result)
    }

    /// Relays until end of stream; once a transfer turns out bulk, in a task of its own.
    async fn run_then_spawn(mut self, shared: &Arc<Shared>) -> io::Result<()> {
        match self.short().await {
            Ok(Progress::Ended) => return Ok(()),
            Ok(Progress::Bulk) => {}
            Err(e) => return self.failed_if(Err(e)),
        }
        let mut task = BackTask {
            direction: self,
            _live: Live::new(shared),
        };
        let bulk = async move {
            let result = task.direction.bulk().await;
            task.direction.failed_if(result)
        };
        AbortOnDrop(tokio::spawn(bulk.in_current_span()))
            .join()
            .await
    }

    /// On an error, marks the connection failed, so both sinks close with a reset.
    fn failed_if(&self, result: io::Result<()>) -> io::Result<()> {
        if result.is_err() {
            self.to.ends.failed.store(true, Ordering::Release);
        }
        result
    }

    /// Relays short exchanges through a small buffer, held only while bytes are in hand.
    ///
    /// A read that drained the socket is not followed by one that finds it empty: the
    /// relay waits for the next readiness event instead (on Linux, `TCP_INQ` says when a
    /// read drained it; elsewhere a read that returns less than asked is taken to).
    async fn short(&mut self) -> io::Result<Progress> {
        loop {
            // Waiting first means a direction that is not sending holds no buffer.
            self.from.as_ref().readable().await?;
            let mut buffer = Vec::with_capacity(SHORT);
            #[cfg(target_os = "linux")]
            let n = inq::read_some(self.from.as_ref(), &mut buffer).await?;
            #[cfg(not(target_os = "linux"))]
            let n = self.from.read_buf(&mut buffer).await?;
            if n == 0 {
                self.end().await?;
                return Ok(Progress::Ended);
            }
            self.to.before_write();
            self.to.half().write_all(&buffer).await?;
            self.activity.touch();
            self.tally.add(n as u64);
            if n == SHORT {
                return Ok(Progress::Bulk);
            }
        }
    }

    /// Relays the rest of a bulk transfer, with `splice(2)` where it can.
    async fn bulk(&mut self) -> io::Result<()> {
        self.to.before_write();
        #[cfg(target_os = "linux")]
        if self.to.shared.splice {
            let (tally, activity) = (&self.tally, &self.activity);
            splice::relay(self.from.as_ref(), self.to.half(), |n| {
                activity.touch();
                tally.add(n);
            })
            .await?;
            return self.end().await;
        }
        copy_buffered(&mut self.from, self.to.half(), &self.tally, &self.activity).await?;
        self.end().await
    }

    /// At end of stream from `from`: the first direction to get there shuts down the write
    /// side of `to`. The second leaves it: the peer of `to` has finished sending too, so
    /// closing the socket sends the FIN, one system call fewer.
    async fn end(&mut self) -> io::Result<()> {
        if self.to.ends.one_ended.swap(true, Ordering::AcqRel) {
            self.to.close_when_dropped();
            Ok(())
        } else {
            self.to.half().shutdown().await
        }
    }
}

/// The upstream-to-client direction once it runs as a task, dropped in field order: the
/// halves first, then the count that lets stop return.
struct BackTask {
    direction: Direction,
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
    /// Whether the socket has `TCP_NODELAY`: small request/response exchanges should not
    /// wait for Nagle's algorithm at the proxy. Nagle holds a write back only while an
    /// earlier one is unacknowledged, so a socket without it gets it before its second write,
    /// and a connection that writes once costs no system call for it.
    nodelay: bool,
    written: bool,
    ends: Arc<Ends>,
    shared: Arc<Shared>,
}

impl Sink {
    fn new(half: OwnedWriteHalf, nodelay: bool, ends: &Arc<Ends>, shared: &Arc<Shared>) -> Self {
        Sink {
            half: Some(half),
            nodelay,
            written: false,
            ends: Arc::clone(ends),
            shared: Arc::clone(shared),
        }
    }

    /// Called before each write: sets `TCP_NODELAY` before the second.
    fn before_write(&mut self) {
        if self.written && !self.nodelay {
            self.nodelay = true;
            let _ = self.half().as_ref().set_nodelay(true);
        }
        self.written = true;
    }

    fn half(&mut self) -> &mut OwnedWriteHalf {
        self.half
            .as_mut()
            .expect("a sink holds its half until dropped or closed")
    }

    /// Lets go of the half without the shutdown its drop would make: the socket closes, with
    /// a FIN, once its read half is gone too.
    fn close_when_dropped(&mut self) {
        if let Some(half) = self.half.take() {
            half.forget();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let Some(half) = self.half.take() else { return };
        if self.ends.failed.load(Ordering::Acquire) || self.shared.cut_off.load(Ordering::Relaxed) {
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

/// The buffer of a short exchange; a read that fills it starts a bulk transfer. A request
/// or response of a few kilobytes stays short.
const SHORT: usize = 16 * 1024;
/// The buffer of a bulk transfer that cannot be spliced; larger buffers measured no faster
/// on loopback, smaller ones slower.
const BUFFER: usize = 64 * 1024;

/// Copies `from` to `to` through a buffer in user space, until `from` reaches end of stream;
/// where `splice(2)` cannot be used.
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
            return Ok(());
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

#[cfg(test)]
mod tests {
    use isopace_host::Env;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_sink_gets_nodelay_before_its_second_write() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = serde_json::json!({"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"});
        let env = Env::new(
            isopace_config::Config::default(),
            Arc::new(isopace_observe::MetricsRegistry::new()),
        );
        let shared = Arc::new(Shared::new(
            "edge",
            &serde_json::from_value(config).unwrap(),
            &env,
        ));
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_read, write) = stream.into_split();
        let mut sink = Sink::new(write, false, &Arc::new(Ends::default()), &shared);
        let nodelay = |sink: &mut Sink| sink.half().as_ref().nodelay().unwrap();
        assert!(!nodelay(&mut sink));
        sink.before_write();
        assert!(!nodelay(&mut sink), "a first write cannot be held back");
        sink.before_write();
        assert!(nodelay(&mut sink));
    }
}
