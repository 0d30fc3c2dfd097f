//! The upstream connect. On Linux it leaves out the `SO_ERROR` query that usually follows a
//! non-blocking connect, one system call per connection: the readiness event alone tells a
//! connection from a failure, and the error is asked for only after a failure.

use std::{io, net::SocketAddr};

use tokio::net::TcpStream;

/// Connects to `upstream` (`host:port`, resolved anew), trying each address in turn.
pub(super) async fn connect(upstream: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(upstream).await? {
        match connect_to(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the upstream resolved to no address",
        )
    }))
}

#[cfg(not(target_os = "linux"))]
async fn connect_to(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

#[cfg(target_os = "linux")]
async fn connect_to(addr: SocketAddr) -> io::Result<TcpStream> {
    use tokio::io::Interest;

    let stream = TcpStream::from_std(start(addr)?)?;
    // A failed connect reports an error (and hang-up) with its writability; a made one only
    // writability.
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

/// A non-blocking socket with `TCP_INQ`, its connect to `addr` started.
#[cfg(target_os = "linux")]
fn start(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};

    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created that nothing else owns; the stream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    super::inq::enable(&stream);
    let rc = match addr {
        SocketAddr::V4(v4) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a `sockaddr_in` that lives across the call, with its size.
            unsafe {
                libc::connect(
                    stream.as_raw_fd(),
                    (&raw const raw).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(v6) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: a `sockaddr_in6` that lives across the call, with its size.
            unsafe {
                libc::connect(
                    stream.as_raw_fd(),
                    (&raw const raw).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}
