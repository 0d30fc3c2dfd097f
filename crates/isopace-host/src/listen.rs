//! Listening sockets that belong to the host, not to one instance: one address type, and a
//! registry that hands a redeployed component the socket its predecessor listened on.
//!
//! Caddy, Envoy, HAProxy and Pingora keep listening sockets open across reloads, because a
//! socket closed and bound again refuses every connection in between. Here the host keeps
//! each bound socket, keyed by component name and address: an instance gets a clone of it,
//! so connections that arrive while one version stops and the next starts wait in the
//! socket's backlog instead of being refused. Keying by component means two components that
//! both ask for port 0 never share a socket.

use std::{
    collections::HashMap,
    fmt, io,
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default listen backlog: how many connections may wait to be accepted. Linux caps it
/// at `net.core.somaxconn` (4096 on current kernels).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Where a component listens.
///
/// | written | meaning |
/// |---|---|
/// | `127.0.0.1:7000`, `[::1]:7000` | that address and port |
/// | `:7000` | every interface, IPv6 and IPv4, port 7000 (as Go reads it): `[::]:7000` taking IPv4 clients too, or `0.0.0.0:7000` on a system without IPv6 |
/// | `localhost:7000` | a host name, resolved when the socket is bound |
/// | `unix:/run/app.sock` | a Unix socket, created with mode 0600 |
///
/// ```
/// use isopace_host::ListenAddr;
///
/// let any: ListenAddr = ":7000".parse()?;
/// assert_eq!(any, ListenAddr::Any(7000));
/// assert_eq!(any.to_string(), ":7000");
/// let named: ListenAddr = "localhost:80".parse()?;
/// assert_eq!(named.to_string(), "localhost:80");
/// let unix: ListenAddr = "unix:/run/app.sock".parse()?;
/// assert!(matches!(unix, ListenAddr::Unix(_)));
/// assert!("7000".parse::<ListenAddr>().is_err());
/// # Ok::<(), isopace_host::ListenAddrError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// Every interface, IPv6 and IPv4, and a port (written `:port`).
    Any(u16),
    /// A host name and port, resolved when bound.
    Host(String, u16),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Why a listen address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a listen address ({reason}); expected `host:port`, `:port` or `unix:/path`"
)]
pub struct ListenAddrError {
    input: String,
    reason: &'static str,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ListenAddrError {
            input: input.to_owned(),
            reason,
        };
        if let Some(path) = input.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err("the socket path is empty"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = input.parse::<SocketAddr>() {
            return Ok(ListenAddr::Ip(addr));
        }
        let (host, port) = input.rsplit_once(':').ok_or(err("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("the port is not a number up to 65535"))?;
        if host.is_empty() {
            return Ok(ListenAddr::Any(port));
        }
        if host.contains(':') || host.starts_with('[') {
            return Err(err("an IPv6 address goes in brackets"));
        }
        Ok(ListenAddr::Host(host.to_owned(), port))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Ip(addr) => write!(f, "{addr}"),
            ListenAddr::Any(port) => write!(f, ":{port}"),
            ListenAddr::Host(host, port) => write!(f, "{host}:{port}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::Ip(addr)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A socket an instance listens on, handed out by [`Env::listen`](crate::Env::listen).
///
/// Dropping it stops this instance from accepting; the socket itself stays bound in the
/// host until no version of the component uses the address any more.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP socket.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket and its path.
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// The TCP listener, or an error naming the address kind when it is a Unix socket.
    pub fn into_tcp(self) -> io::Result<tokio::net::TcpListener> {
        match self {
            Listener::Tcp(listener) => Ok(listener),
            #[cfg(unix)]
            Listener::Unix(_, path) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "this component listens on TCP addresses only, not `unix:{}`",
                    path.display()
                ),
            )),
        }
    }

    /// Where it listens (for port 0, the port the system chose).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().map(ListenAddr::Ip),
            #[cfg(unix)]
            Listener::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }
}

/// One bound socket and the instance that last asked for it.
#[derive(Debug)]
struct Bound {
    socket: Socket,
    claimed_by: u64,
}

#[derive(Debug)]
enum Socket {
    Tcp(StdTcpListener),
    /// The listener, its path, and the inode the path had once it was placed there.
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener, PathBuf, u64),
}

impl Socket {
    /// Stops the kernel accepting on this socket in every copy of it, so a client is
    /// refused even while an instance that is going away still holds one (a TCP accept
    /// loop then sees an error; a Unix one waits, and ends when it is cancelled).
    fn stop_listening(&self) {
        // On a listening socket, shutting down the read side ends listening (Linux); where
        // it fails, closing the last copy does it.
        let socket = match self {
            Socket::Tcp(listener) => socket2::SockRef::from(listener),
            #[cfg(unix)]
            Socket::Unix(listener, ..) => socket2::SockRef::from(listener),
        };
        let _ = socket.shutdown(std::net::Shutdown::Read);
    }
}

#[cfg(unix)]
impl Drop for Socket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Socket::Unix(_, path, ino) = self {
            // Remove the path only while it is still this socket, not a successor's.
            if std::fs::symlink_metadata(&*path).is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(&*path);
            }
        }
    }
}

/// The host's bound sockets, by component name and address.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    bound: Mutex<HashMap<(Arc<str>, ListenAddr), Bound>>,
    /// How many sockets are bound: most hosts have none or a few, and every undeploy asks
    /// to close a component's, so an empty registry is not locked to find nothing.
    count: std::sync::atomic::AtomicUsize,
}

impl Listeners {
    /// A listener on `addr` for instance `generation` of `component`: a clone of the socket
    /// an earlier version bound, or a new one.
    pub(crate) async fn listen(
        self: &Arc<Self>,
        component: &Arc<str>,
        generation: u64,
        addr: &ListenAddr,
        backlog: u32,
    ) -> io::Result<Listener> {
        let key = (Arc::clone(component), addr.clone());
        if let Some(listener) = self.claim(&key, generation)? {
            return Ok(listener);
        }
        let socket = bind(addr, backlog).await?;
        let mut bound = self.bound.lock();
        // Another instance of the same component may have bound it meanwhile; keep one.
        let entry = bound.entry(key).or_insert(Bound {
            socket,
            claimed_by: generation,
        });
        entry.claimed_by = generation;
        let listener = hand_out(&entry.socket);
        self.count
            .store(bound.len(), std::sync::atomic::Ordering::Release);
        listener
    }

    fn claim(&self, key: &(Arc<str>, ListenAddr), generation: u64) -> io::Result<Option<Listener>> {
        let mut bound = self.bound.lock();
        let Some(entry) = bound.get_mut(key) else {
            return Ok(None);
        };
        entry.claimed_by = generation;
        hand_out(&entry.socket).map(Some)
    }

    /// Closes the sockets of `component` that its instance `generation` did not ask for: an
    /// address the new version no longer uses.
    pub(crate) fn keep_only(&self, component: &str, generation: u64) {
        self.close_where(|(name, _), entry| &**name == component && entry.claimed_by != generation);
    }

    /// Closes every socket of `component`; returns whether there was any.
    pub(crate) fn release(&self, component: &str) -> bool {
        self.close_where(|(name, _), _| &**name == component)
    }

    /// Closes the sockets of every component for which `keep` says no.
    pub(crate) fn keep_only_for(&self, mut keep: impl FnMut(&str) -> bool) {
        self.close_where(|(name, _), _| !keep(name));
    }

    /// Closes every socket.
    pub(crate) fn release_all(&self) {
        self.close_where(|_, _| true);
    }

    /// Closes the sockets `closes` picks: no longer accepting, whoever holds a copy.
    /// Returns whether it closed any.
    fn close_where(&self, mut closes: impl FnMut(&(Arc<str>, ListenAddr), &Bound) -> bool) -> bool {
        use std::sync::atomic::Ordering;
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let closed: Vec<_> = {
            let mut bound = self.bound.lock();
            let closed = bound.extract_if(|key, entry| closes(key, entry)).collect();
            self.count.store(bound.len(), Ordering::Release);
            closed
        };
        for (_, entry) in &closed {
            entry.socket.stop_listening();
        }
        !closed.is_empty()
    }
}

fn hand_out(socket: &Socket) -> io::Result<Listener> {
    match socket {
        Socket::Tcp(listener) => {
            tokio::net::TcpListener::from_std(listener.try_clone()?).map(Listener::Tcp)
        }
        #[cfg(unix)]
        Socket::Unix(listener, path, _) => {
            let listener = tokio::net::UnixListener::from_std(listener.try_clone()?)?;
            Ok(Listener::Unix(listener, path.clone()))
        }
    }
}

async fn bind(addr: &ListenAddr, backlog: u32) -> io::Result<Socket> {
    let ip = match addr {
        ListenAddr::Ip(ip) => *ip,
        ListenAddr::Any(port) => match bind_dual_stack(*port, backlog) {
            Ok(listener) => return Ok(Socket::Tcp(listener)),
            // No IPv6, or no dual stack, here: every IPv4 interface it is.
            Err(DualStack::Unavailable) => SocketAddr::from(([0, 0, 0, 0], *port)),
            Err(DualStack::Failed(e)) => return Err(e),
        },
        ListenAddr::Host(host, port) => tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve `{host}`: {e}")))?
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{host}` resolves to no address"),
                )
            })?,
        #[cfg(unix)]
        ListenAddr::Unix(path) => return bind_unix(path),
        #[cfg(not(unix))]
        ListenAddr::Unix(_) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Unix sockets need a Unix system",
            ));
        }
    };
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As every server does: a restart may bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(ip)?;
    let listener = socket.listen(backlog)?;
    Ok(Socket::Tcp(listener.into_std()?))
}

/// Why a dual-stack socket is not listening.
enum DualStack {
    /// The system cannot make one (no IPv6, or IPv6 sockets that cannot take IPv4).
    Unavailable,
    /// It could, and binding or listening failed (the port is taken, say).
    Failed(io::Error),
}

/// Listens on `[::]:port` taking IPv4 clients too (as IPv4-mapped addresses), whatever
/// the system's `bindv6only` default.
fn bind_dual_stack(port: u16, backlog: u32) -> Result<StdTcpListener, DualStack> {
    use socket2::{Domain, Socket as RawSocket, Type};
    let socket = RawSocket::new(Domain::IPV6, Type::STREAM, None)
        .and_then(|socket| socket.set_only_v6(false).map(|()| socket))
        .map_err(|_| DualStack::Unavailable)?;
    let listening = (|| {
        // As every server does: a restart may bind while old connections sit in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        socket.set_nonblocking(true)
    })();
    match listening {
        Ok(()) => Ok(socket.into()),
        Err(e) if no_ipv6(&e) => Err(DualStack::Unavailable),
        Err(e) => Err(DualStack::Failed(e)),
    }
}

/// Whether `error` says the system has no IPv6 (disabled in the kernel, or no address).
fn no_ipv6(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            error.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
        )
    }
    #[cfg(not(unix))]
    {
        error.kind() == io::ErrorKind::AddrNotAvailable
    }
}

/// Binds a Unix socket with mode 0600. A file left at the path by a process that is gone
/// is replaced; a socket something still answers on is not.
#[cfg(unix)]
fn bind_unix(path: &Path) -> io::Result<Socket> {
    use std::os::unix::{
        fs::{FileTypeExt, MetadataExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    };

    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Ok(_) if UnixStream::connect(path).is_ok() => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running process", path.display()),
            ));
        }
        _ => {}
    }
    // Bind beside it, restrict, then rename over the path: the socket appears with its final
    // mode, and a stale file is replaced in one step.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the socket path names no file")
    })?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp)?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    let ino = std::fs::symlink_metadata(path)?.ino();
    Ok(Socket::Unix(listener, path.to_path_buf(), ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_every_documented_form() {
        let ip: ListenAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(ip, ListenAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 7000))));
        assert_eq!(
            "[::1]:80".parse::<ListenAddr>().unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            ":9090".parse::<ListenAddr>().unwrap(),
            ListenAddr::Any(9090)
        );
        assert_eq!(":9090".parse::<ListenAddr>().unwrap().to_string(), ":9090");
        assert_eq!(
            "db.internal:5432".parse::<ListenAddr>().unwrap(),
            ListenAddr::Host("db.internal".into(), 5432)
        );
        assert_eq!(
            "unix:/run/a.sock"
                .parse::<ListenAddr>()
                .unwrap()
                .to_string(),
            "unix:/run/a.sock"
        );
        for bad in ["7000", "host:", "host:99999", "unix:", "::1:80"] {
            let err = bad.parse::<ListenAddr>().unwrap_err();
            assert!(err.to_string().starts_with(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn addresses_round_trip_through_serde() {
        let addr: ListenAddr = serde_json::from_str("\":7000\"").unwrap();
        assert_eq!(serde_json::to_string(&addr).unwrap(), "\":7000\"");
        let err = serde_json::from_str::<ListenAddr>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("not a listen address"), "{err}");
    }
}
