//! What the types' preflight checks share: whether this process may use a path, and
//! whether a listen address can be bound now.

#[cfg(any(feature = "admin", feature = "tcp-proxy"))]
use isopace_deploy::{Finding, PreflightContext, Stage};
#[cfg(any(feature = "admin", feature = "tcp-proxy"))]
use isopace_host::ListenAddr;

/// Whether this process may use `path` as `mode` asks (`libc::X_OK`, `libc::W_OK`, or
/// them combined) by its effective user and groups: the permission an `exec` or a `bind`
/// would be given.
#[cfg(unix)]
pub(crate) fn accessible(path: &std::path::Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a NUL-terminated string that lives across the call, which only
    // reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// The preflight check of a listen address, in field `field`: a warning when it cannot be
/// bound now. Only a warning, since a running daemon may hold the address and hand it
/// over; when a component is built, the real bind at its start is what counts, so nothing
/// is tried.
#[cfg(any(feature = "admin", feature = "tcp-proxy"))]
pub(crate) fn listen(
    field: &str,
    addr: &ListenAddr,
    context: &PreflightContext<'_>,
) -> Vec<Finding> {
    if context.stage() == Stage::Build {
        return Vec::new();
    }
    match cannot_bind(addr) {
        Some(why) => vec![Finding::warning(
            field,
            format!("cannot listen on {addr} now: {why}"),
        )],
        None => Vec::new(),
    }
}

/// Why `addr` cannot be bound now, if it cannot. A TCP address (a host name resolved first,
/// as the host resolves it) is bound as the host binds it, and the socket closed at once;
/// for a Unix socket, its path and directory are looked at, and nothing is created.
#[cfg(any(feature = "admin", feature = "tcp-proxy"))]
pub(crate) fn cannot_bind(addr: &ListenAddr) -> Option<String> {
    use std::net::{TcpListener, ToSocketAddrs};
    let ip = match addr {
        ListenAddr::Ip(ip) => *ip,
        // Checked on IPv4, which every system has; the host binds IPv6 too where it can.
        ListenAddr::Any(port) => ([0, 0, 0, 0], *port).into(),
        ListenAddr::Host(host, port) => match (host.as_str(), *port).to_socket_addrs() {
            Ok(mut all) => all.next()?,
            Err(e) => return Some(format!("cannot resolve `{host}`: {e}")),
        },
        ListenAddr::Unix(path) => return cannot_bind_unix(path),
        // A form added later is checked when it is bound.
        _ => return None,
    };
    // std sets SO_REUSEADDR on Unix, as the host does: only a socket that listens on the
    // address, not one of its connections in TIME_WAIT, makes this fail.
    TcpListener::bind(ip).err().map(|e| e.to_string())
}

#[cfg(all(unix, any(feature = "admin", feature = "tcp-proxy")))]
fn cannot_bind_unix(path: &std::path::Path) -> Option<String> {
    use std::os::unix::{fs::FileTypeExt, net::UnixStream};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("the directory {} does not exist", dir.display()));
        }
        Err(e) => {
            return Some(format!(
                "cannot look at the directory {}: {e}",
                dir.display()
            ));
        }
        Ok(meta) if !meta.is_dir() => {
            return Some(format!("{} is not a directory", dir.display()));
        }
        Ok(_) if !accessible(dir, libc::W_OK | libc::X_OK) => {
            return Some(format!(
                "this user may not create a socket in {}",
                dir.display()
            ));
        }
        Ok(_) => {}
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            Some(format!("{} exists and is not a socket", path.display()))
        }
        Ok(_) if UnixStream::connect(path).is_ok() => {
            Some(format!("{} is in use by a running process", path.display()))
        }
        _ => None,
    }
}

#[cfg(all(not(unix), any(feature = "admin", feature = "tcp-proxy")))]
fn cannot_bind_unix(_: &std::path::Path) -> Option<String> {
    Some("Unix sockets need a Unix system".to_owned())
}

#[cfg(all(test, unix, any(feature = "admin", feature = "tcp-proxy")))]
mod tests {
    use std::{net::TcpListener, os::unix::fs::PermissionsExt};

    use isopace_deploy::{Descriptor, Registry, Severity};

    use super::*;

    fn addr(text: &str) -> ListenAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_tcp_address_in_use_cannot_be_bound_and_a_free_one_can() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let why = cannot_bind(&addr(&format!("127.0.0.1:{port}"))).unwrap();
        assert!(why.contains("in use"), "{why}");
        drop(held);
        assert_eq!(cannot_bind(&addr(&format!("127.0.0.1:{port}"))), None);
        assert_eq!(cannot_bind(&addr("127.0.0.1:0")), None);
    }

    #[test]
    fn a_unix_socket_needs_a_writable_directory_and_a_free_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let unix = |p: &std::path::Path| ListenAddr::Unix(p.to_owned());
        assert_eq!(cannot_bind(&unix(&path)), None);
        let missing = dir.path().join("missing/a.sock");
        let why = cannot_bind(&unix(&missing)).unwrap();
        assert!(why.ends_with("missing does not exist"), "{why}");

        std::fs::write(&path, "").unwrap();
        let why = cannot_bind(&unix(&path)).unwrap();
        assert!(why.ends_with("a.sock exists and is not a socket"), "{why}");
        std::fs::remove_file(&path).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let why = cannot_bind(&unix(&path)).unwrap();
        assert!(why.ends_with("is in use by a running process"), "{why}");
        drop(listener);
        // A socket nothing answers on any more is replaced when bound.
        assert_eq!(cannot_bind(&unix(&path)), None);

        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
        // Root may write anywhere, and so may bind there.
        let expected = accessible(&locked, libc::W_OK);
        assert_eq!(
            cannot_bind(&unix(&locked.join("a.sock"))).is_none(),
            expected
        );
    }

    #[test]
    fn a_listen_check_warns_when_validating_and_does_nothing_when_building() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = addr(&held.local_addr().unwrap().to_string());
        let mut registry = Registry::new();
        crate::register_all(&mut registry).unwrap();
        let text = format!(
            "{{\"name\": \"edge\", \"type\": \"tcp-proxy\",\n \"config\": {{\"listen\": \"{busy}\", \
             \"upstream\": \"127.0.0.1:1\"}}}}"
        );
        let d = Descriptor::parse(&text, "edge.json").unwrap();
        let found = registry.preflight(&d, Stage::Validate).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].kind(),
            &isopace_deploy::ErrorKind::Preflight(Severity::Warning)
        );
        let said = found[0].to_string();
        assert!(
            said.starts_with(&format!(
                "edge.json:2:23: field `config.listen`: cannot listen on {busy} now: "
            )),
            "{said}"
        );
        assert!(registry.preflight(&d, Stage::Build).unwrap().is_empty());
    }
}
