//! What the soak measures about the process: resident memory and the runtime's live tasks.

/// The process's resident set size in bytes, from `/proc/self/status` (`None` where there is
/// no procfs, so callers skip the memory check there).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The number of tasks alive on the current tokio runtime.
///
/// # Panics
///
/// Panics outside a tokio runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// How long the soak runs: `ISOPACE_SOAK=long` asks for the long version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoakLength {
    /// The version CI runs, well under a minute.
    Short,
    /// Ten times the work, for a manual run before a release.
    Long,
}

impl SoakLength {
    /// The length `ISOPACE_SOAK` asks for: `long` for [`SoakLength::Long`], anything else or
    /// unset for [`SoakLength::Short`].
    pub fn from_env() -> SoakLength {
        match std::env::var("ISOPACE_SOAK").as_deref() {
            Ok("long") => SoakLength::Long,
            _ => SoakLength::Short,
        }
    }

    /// The factor to scale the short version's counts by.
    pub fn factor(self) -> usize {
        match self {
            SoakLength::Short => 1,
            SoakLength::Long => 10,
        }
    }
}
