//! The admin endpoint's HTTP server: an accept loop and connections that bound what a
//! client can hold — a deadline for each request's headers, one for the quiet time between
//! requests, a connection limit, and a reserve of file descriptors it never takes.
//!
//! hyper's own header timeout starts whenever a connection waits for a request, so it cannot
//! tell a slow request from a quiet keep-alive connection; the connection here keeps its own
//! deadline instead, moved by what the connection does (see [`Clock`]).

use std::{
    future::{Future, poll_fn},
    io,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper::{server::conn::http1, service::Service as _};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use isopace_host::{CancellationToken, Env, Listener};
use parking_lot::Mutex;
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
    task::JoinSet,
    time::Instant,
};

use super::descriptors::{Reserve, Room};

/// What a connection may take: see the fields of [`AdminConfig`](super::AdminConfig).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) header: Duration,
    pub(super) idle: Duration,
}

/// How long to wait before looking at the descriptor reserve again while it keeps the
/// endpoint from accepting (sooner when one of its own connections closes).
const RESERVE_RECHECK: Duration = Duration::from_millis(100);
/// How long to wait after an accept that failed (usually for lack of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How often a warning about the same condition may be logged.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// hyper's smallest read buffer: admin requests are a request line and a few headers.
const MAX_BUF: usize = 8 * 1024;

/// The answer to a connection over `max_connections`, written without reading the request.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 32\r\n\
\r\n\
too many open admin connections\n";

/// A TCP or Unix listening socket.
pub(super) enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Acceptor {
    pub(super) fn new(listener: Listener) -> io::Result<Self> {
        match listener {
            Listener::Tcp(listener) => Ok(Acceptor::Tcp(listener)),
            Listener::Unix(listener, _) => Ok(Acceptor::Unix(listener)),
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the admin endpoint cannot serve on {other:?}"),
            )),
        }
    }

    async fn accept(&self) -> io::Result<Stream> {
        match self {
            Acceptor::Tcp(listener) => listener.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Acceptor::Unix(listener) => listener.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    /// Answers 503 and closes, without waiting: what the socket takes at once is sent.
    fn refuse(self) {
        let mut sink = [0; 1024];
        match self {
            Stream::Tcp(s) => {
                // A request already received and left unread would turn the close into a
                // reset, which may discard the answer before the client reads it.
                while matches!(s.try_read(&mut sink), Ok(n) if n > 0) {}
                let _ = s.try_write(BUSY);
            }
            Stream::Unix(s) => {
                while matches!(s.try_read(&mut sink), Ok(n) if n > 0) {}
                let _ = s.try_write(BUSY);
            }
        }
    }
}

/// The accept loop's settings and what it publishes to.
pub(super) struct Server {
    pub(super) acceptor: Acceptor,
    pub(super) router: Router,
    pub(super) timeouts: Timeouts,
    pub(super) max_connections: usize,
    pub(super) reserve: Reserve,
    /// Where the pause for the descriptor reserve is published (the component's details).
    pub(super) env: Env,
    pub(super) listen: String,
}

impl Server {
    /// Accepts until `stop`, then lets open connections finish their request in progress.
    pub(super) async fn serve(mut self, mut stop: oneshot::Receiver<()>) {
        let mut connections = JoinSet::new();
        let closing = CancellationToken::new();
        let mut paused = false;
        let (mut warned_full, mut warned_accept) = (None::<Instant>, None::<Instant>);
        loop {
            match self.reserve.check(connections.len()) {
                Room::Yes if paused => {
                    paused = false;
                    tracing::info!(
                        "admin endpoint accepting again: the descriptor reserve is free"
                    );
                    self.env.set_details(json!({ "listen": self.listen }));
                }
                Room::Yes => {}
                Room::No { free, limit } => {
                    if !paused {
                        paused = true;
                        let reason = format!(
                            "{free} file descriptors free below the limit of {limit}; `fd_reserve` keeps {} for the rest of the process",
                            self.reserve.size()
                        );
                        tracing::warn!("admin endpoint stopped accepting: {reason}");
                        self.env
                            .set_details(json!({ "listen": self.listen, "paused": reason }));
                    }
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        Some(_) = connections.join_next() => {}
                        () = tokio::time::sleep(RESERVE_RECHECK) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(_) = connections.join_next() => {}
                accepted = self.acceptor.accept() => match accepted {
                    Ok(stream) if connections.len() >= self.max_connections => {
                        if due(&mut warned_full) {
                            tracing::warn!(
                                max_connections = self.max_connections,
                                "admin endpoint at max_connections: answering new connections 503"
                            );
                        }
                        stream.refuse();
                    }
                    Ok(stream) => {
                        let (router, timeouts) = (self.router.clone(), self.timeouts);
                        let closing = closing.clone();
                        // In the component's span, as every line a component causes is.
                        let serve = async move {
                            match stream {
                                Stream::Tcp(s) => connection(s, router, timeouts, closing).await,
                                Stream::Unix(s) => connection(s, router, timeouts, closing).await,
                            }
                        };
                        connections.spawn(tracing::Instrument::in_current_span(serve));
                    }
                    Err(e) => {
                        if due(&mut warned_accept) {
                            tracing::error!(error = %e, "admin endpoint cannot accept; retrying every 100ms");
                        }
                        tokio::select! {
                            _ = &mut stop => break,
                            () = tokio::time::sleep(ACCEPT_RETRY) => {}
                        }
                    }
                },
            }
        }
        drop(self.acceptor);
        // Idle connections close now; one in the middle of a request finishes it.
        closing.cancel();
        while connections.join_next().await.is_some() {}
    }
}

/// Whether a warning last logged at `last` may be logged again now (and notes it was).
fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < WARN_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

/// The deadline of one connection, moved by what it does:
/// - accepted: the first request's headers are due within the header timeout;
/// - answered: the next request may begin within the idle timeout;
/// - a byte of that request arrived: its headers are due within the header timeout;
/// - between a request's headers and its answer: no deadline (the handlers do not wait on
///   the client).
///
/// A client that does not read the answer holds its connection only until the idle deadline.
/// Once the endpoint stops, no deadline lies more than [`CLOSING_GRACE`] ahead: an answer
/// being written gets that long, a request still trickling in does not hold the stop.
#[derive(Debug)]
struct Clock {
    timeouts: Timeouts,
    state: Mutex<ClockState>,
}

#[derive(Debug, Clone, Copy)]
struct ClockState {
    deadline: Option<Instant>,
    /// Waiting between requests: the next byte starts the header deadline.
    idle: bool,
    /// Set once the endpoint stops: the latest any deadline may be.
    closing_by: Option<Instant>,
}

/// How long a connection may go on once the endpoint stops, unless a handler is running.
const CLOSING_GRACE: Duration = Duration::from_secs(1);

impl Clock {
    fn new(timeouts: Timeouts) -> Self {
        Clock {
            timeouts,
            state: Mutex::new(ClockState {
                deadline: Some(Instant::now() + timeouts.header),
                idle: false,
                closing_by: None,
            }),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let state = self.state.lock();
        let deadline = state.deadline?;
        Some(state.closing_by.map_or(deadline, |by| by.min(deadline)))
    }

    fn set(&self, deadline: Option<Instant>, idle: bool) {
        let mut state = self.state.lock();
        state.deadline = deadline;
        state.idle = idle;
    }

    /// Bytes arrived.
    fn read(&self) {
        if self.state.lock().idle {
            self.set(Some(Instant::now() + self.timeouts.header), false);
        }
    }

    /// A request's headers are complete.
    fn busy(&self) {
        self.set(None, false);
    }

    /// Its answer is ready.
    fn answered(&self) {
        self.set(Some(Instant::now() + self.timeouts.idle), true);
    }

    /// The endpoint stops.
    fn closing(&self) {
        self.state.lock().closing_by = Some(Instant::now() + CLOSING_GRACE);
    }
}

/// A connection's socket that tells its [`Clock`] when bytes arrive.
struct Watched<I> {
    io: I,
    clock: Arc<Clock>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves HTTP/1 on one connection until the client closes it, a deadline passes, or
/// `closing` asks it to finish.
async fn connection<I>(io: I, router: Router, timeouts: Timeouts, closing: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Arc::new(Clock::new(timeouts));
    let service = TowerToHyperService::new(router);
    let handler = {
        let clock = Arc::clone(&clock);
        hyper::service::service_fn(move |request| {
            clock.busy();
            let response = service.call(request);
            let clock = Arc::clone(&clock);
            async move {
                let response = response.await;
                clock.answered();
                response
            }
        })
    };
    let io = TokioIo::new(Watched {
        io,
        clock: Arc::clone(&clock),
    });
    let mut conn = pin!(
        http1::Builder::new()
            .max_buf_size(MAX_BUF)
            .serve_connection(io, handler)
    );
    let mut closed = pin!(closing.cancelled());
    let mut finishing = false;
    let mut timer = pin!(tokio::time::sleep(timeouts.header));
    // The handlers' state changes happen inside `conn`'s poll, so the deadline is read
    // again after each one.
    let outcome = poll_fn(|cx| {
        if !finishing && closed.as_mut().poll(cx).is_ready() {
            finishing = true;
            clock.closing();
            conn.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if let Some(deadline) = clock.deadline() {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await;
    match outcome {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(error = %e, "admin connection failed"),
        None => tracing::debug!("admin connection closed: the client was too slow or quiet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_connection() {
        let start = Instant::now();
        let clock = Clock::new(TIMEOUTS);
        // The first request's headers are due from the accept, however they trickle in.
        assert_eq!(clock.deadline(), Some(start + TIMEOUTS.header));
        tokio::time::advance(Duration::from_secs(4)).await;
        clock.read();
        assert_eq!(clock.deadline(), Some(start + TIMEOUTS.header));
        clock.busy();
        assert_eq!(clock.deadline(), None);
        clock.answered();
        let answered = Instant::now();
        assert_eq!(clock.deadline(), Some(answered + TIMEOUTS.idle));
        // A quiet keep-alive connection gets the idle timeout; the next request's first
        // byte gives its headers the header timeout from then.
        tokio::time::advance(Duration::from_secs(70)).await;
        clock.read();
        let began = Instant::now();
        assert_eq!(clock.deadline(), Some(began + TIMEOUTS.header));
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.read();
        assert_eq!(clock.deadline(), Some(began + TIMEOUTS.header));
        // Stopping brings every deadline within the grace; a running handler keeps none.
        clock.closing();
        let closing = Instant::now();
        assert_eq!(clock.deadline(), Some(closing + CLOSING_GRACE));
        clock.busy();
        assert_eq!(clock.deadline(), None);
        clock.answered();
        assert_eq!(clock.deadline(), Some(closing + CLOSING_GRACE));
    }

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        assert!(head.starts_with("HTTP/1.1 503 "));
    }
}
