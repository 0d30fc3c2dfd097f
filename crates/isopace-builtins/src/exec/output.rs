//! The child's stdout and stderr, logged line by line inside the component's span, each at
//! its configured level.

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    task::JoinHandle,
};

use super::child::Runner;

/// Output lines longer than this are logged in pieces, so a child cannot make the daemon
/// buffer without bound.
const MAX_LINE: u64 = 64 * 1024;

impl Runner {
    pub(super) fn log_output(
        &self,
        output: impl AsyncRead + Unpin + Send + 'static,
        stream: &'static str,
        pid: u32,
        level: tracing::Level,
    ) -> JoinHandle<()> {
        self.env.spawn(async move {
            let mut reader = BufReader::new(output);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut reader)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) => break,
                    Ok(_) => {
                        let end = line
                            .iter()
                            .rposition(|b| !matches!(b, b'\n' | b'\r'))
                            .map_or(0, |i| i + 1);
                        let text = String::from_utf8_lossy(&line[..end]);
                        match level {
                            tracing::Level::TRACE => tracing::trace!(stream, pid, "{text}"),
                            tracing::Level::DEBUG => tracing::debug!(stream, pid, "{text}"),
                            tracing::Level::INFO => tracing::info!(stream, pid, "{text}"),
                            tracing::Level::WARN => tracing::warn!(stream, pid, "{text}"),
                            _ => tracing::error!(stream, pid, "{text}"),
                        }
                    }
                    Err(e) => {
                        tracing::debug!(stream, pid, error = %e, "cannot read the child's output");
                        break;
                    }
                }
            }
        })
    }
}
