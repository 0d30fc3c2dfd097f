//! The `config` of a `tcp-proxy` descriptor, with the checks that refuse a bad one.

use std::time::Duration;

use isopace_host::{DEFAULT_BACKLOG, ListenAddr};
use serde::{Deserialize, Deserializer, de};
use tokio::sync::Semaphore;

use crate::de::positive_duration;

/// The `config` of a `tcp-proxy` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxyConfig {
    /// The address to accept connections on: `127.0.0.1:7000`, `[::1]:7000`, `:7000` (every
    /// interface) or `localhost:7000` (resolved when bound); not a `unix:` path. The socket
    /// belongs to the host, so a redeployed proxy accepts on it at once.
    #[serde(deserialize_with = "tcp_listen")]
    pub listen: ListenAddr,
    /// How many connections may wait to be accepted (default
    /// [`DEFAULT_BACKLOG`](isopace_host::DEFAULT_BACKLOG), 1024; Linux caps it at
    /// `net.core.somaxconn`). It applies when the socket is first bound: a redeploy that
    /// changes it keeps the socket, and its backlog, until the proxy is undeployed.
    #[serde(default = "default_backlog", deserialize_with = "positive_backlog")]
    pub backlog: u32,
    /// Where to relay each connection: `host:port`, resolved anew for every connection.
    #[serde(deserialize_with = "host_port")]
    pub upstream: String,
    /// How long an upstream connect may take before the client is closed (default 5s).
    #[serde(default = "five_seconds", deserialize_with = "positive_duration")]
    pub connect_timeout: Duration,
    /// Connections relayed at once (default 1024). Beyond it, new connections wait in the
    /// kernel's accept backlog until one closes; they are not refused.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "positive_count"
    )]
    pub max_connections: usize,
    /// Closes a connection when no byte has moved either way for this long (default: never).
    #[serde(default, with = "isopace_config::serde_duration::option")]
    pub idle_timeout: Option<Duration>,
    /// On stop, how long open connections may take to finish before they are closed
    /// (default 10s, under the host's default stop timeout of 15s).
    #[serde(default = "ten_seconds", with = "isopace_config::serde_duration")]
    pub drain_timeout: Duration,
    /// The TCP congestion control algorithm of the proxy's own sockets, towards the client
    /// and towards the upstream, e.g. `"cubic"` (Linux only; default: the system's,
    /// `net.ipv4.tcp_congestion_control`).
    ///
    /// Worth setting where the system default paces every connection in the kernel: BBR
    /// without the `fq` qdisc does so with a timer per socket (always on loopback), and a
    /// proxy holds two sockets per connection. An algorithm outside
    /// `net.ipv4.tcp_allowed_congestion_control` needs `CAP_NET_ADMIN`; start fails when the
    /// algorithm cannot be set. It is set on the listening socket too, which a redeploy keeps:
    /// a version without it accepts with the algorithm an earlier version set.
    #[serde(default, deserialize_with = "algorithm_name")]
    pub congestion_control: Option<String>,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    1024
}

fn default_backlog() -> u32 {
    DEFAULT_BACKLOG
}

fn positive_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let n = crate::de::positive_count(deserializer)?;
    // The semaphore that enforces it has a ceiling far above any useful limit.
    Ok(n.min(Semaphore::MAX_PERMITS))
}

fn positive_backlog<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(deserializer)?;
    if n == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

fn tcp_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ListenAddr, D::Error> {
    let addr = ListenAddr::deserialize(deserializer)?;
    check_tcp(&addr).map_err(de::Error::custom)?;
    Ok(addr)
}

/// A proxy relays TCP: a `unix:` listen address is refused where it is written.
pub(super) fn check_tcp(addr: &ListenAddr) -> Result<(), String> {
    match addr {
        ListenAddr::Unix(path) => Err(format!(
            "`unix:{}`: a tcp-proxy listens on TCP addresses only (`host:port` or `:port`)",
            path.display()
        )),
        _ => Ok(()),
    }
}

fn host_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    check_host_port(&text).map_err(de::Error::custom)?;
    Ok(text)
}

fn algorithm_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(deserializer)?;
    check_algorithm_name(&name).map_err(de::Error::custom)?;
    Ok(Some(name))
}

/// A congestion control algorithm's name as the kernel takes it: 1 to 15 bytes.
pub(super) fn check_algorithm_name(name: &str) -> Result<(), String> {
    let valid = (1..16).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a congestion control algorithm name (1 to 15 letters, digits, `_` or `-`)"
        ))
    }
}

pub(super) fn check_host_port(text: &str) -> Result<(), String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if valid {
        Ok(())
    } else {
        Err(format!("`{text}` is not a `host:port` address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_proxy::TcpProxy;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Result<TcpProxyConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn defaults_fill_what_the_descriptor_leaves_out() {
        let c =
            config(json!({"listen": "127.0.0.1:7000", "upstream": "db.internal:5432"})).unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.backlog, DEFAULT_BACKLOG);
        let c = config(json!({"listen": ":7000", "upstream": "h:1", "backlog": 16})).unwrap();
        assert_eq!(c.listen, ListenAddr::Any(7000));
        assert_eq!(c.backlog, 16);
        let c = config(json!({"listen": "localhost:7000", "upstream": "h:1"})).unwrap();
        assert_eq!(c.listen, ListenAddr::Host("localhost".into(), 7000));
        let c = config(json!({
            "listen": "[::1]:7000", "upstream": "[::1]:7001",
            "connect_timeout": "250ms", "max_connections": 3, "idle_timeout": 30, "drain_timeout": "1s"
        }))
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.max_connections, 3);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let listen = "127.0.0.1:7000";
        for (value, needle) in [
            (
                json!({"listen": listen, "upstream": "no-port"}),
                "host:port",
            ),
            (json!({"listen": listen, "upstream": "host:0"}), "host:port"),
            (json!({"listen": listen, "upstream": ":80"}), "host:port"),
            (
                json!({"listen": listen, "upstream": "h:1", "max_connections": 0}),
                "at least 1",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "connect_timeout": "0s"}),
                "greater than zero",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "upstreams": []}),
                "unknown field",
            ),
            (json!({"listen": "nowhere", "upstream": "h:1"}), "address"),
            (
                json!({"listen": "unix:/run/edge.sock", "upstream": "h:1"}),
                "TCP addresses only",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "backlog": 0}),
                "at least 1",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "congestion_control": ""}),
                "not a congestion control algorithm name",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "congestion_control": "a b"}),
                "not a congestion control algorithm name",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "congestion_control": "x".repeat(16)}),
                "1 to 15",
            ),
        ] {
            let e = config(value.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{value}: {e}");
        }
        assert!(config(TcpProxy::example()).is_ok());
    }
}
