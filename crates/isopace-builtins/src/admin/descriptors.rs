//! The descriptor reserve: the admin endpoint stops accepting while taking one more
//! connection would leave fewer than `fd_reserve` file descriptors free, so its clients can
//! never starve the rest of the process (the deployer reading files, a redeploy binding a
//! socket, an `exec` spawning a child) of descriptors.
//!
//! The limit is the process's soft `RLIMIT_NOFILE`. Counting what is open means listing
//! `/proc/self/fd`, which costs as much as there are descriptors, so the count is taken at
//! most once a second while far from the limit, and estimated in between from the
//! endpoint's own connections (the only ones it opens). Near the limit (less than twice the
//! reserve free) it is counted before every accept.

use std::{fmt, io, sync::Arc, time::Duration};

use tokio::time::Instant;

/// How long a count is trusted while far from the limit.
const RECOUNT: Duration = Duration::from_secs(1);

/// Where the limit and the count of open descriptors come from: the process, or a test's
/// stand-in.
#[derive(Clone)]
pub(crate) struct Descriptors {
    limit: Arc<dyn Fn() -> Option<usize> + Send + Sync>,
    open: Arc<dyn Fn() -> io::Result<usize> + Send + Sync>,
}

impl Descriptors {
    /// This process's soft limit and its open descriptors.
    pub(crate) fn process() -> Self {
        Descriptors {
            limit: Arc::new(soft_limit),
            open: Arc::new(open_descriptors),
        }
    }

    /// A stand-in: `limit` and `open` answer instead of the process.
    #[cfg(test)]
    pub(crate) fn new(
        limit: impl Fn() -> Option<usize> + Send + Sync + 'static,
        open: impl Fn() -> io::Result<usize> + Send + Sync + 'static,
    ) -> Self {
        Descriptors {
            limit: Arc::new(limit),
            open: Arc::new(open),
        }
    }
}

impl fmt::Debug for Descriptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptors")
            .field("limit", &(self.limit)())
            .finish_non_exhaustive()
    }
}

/// The soft limit on open files; `None` when unlimited or unknown.
fn soft_limit() -> Option<usize> {
    let limit = crate::limits::open_files().ok()?;
    (limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// How many descriptors the process has open, from the kernel's list of them.
fn open_descriptors() -> io::Result<usize> {
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    // The listing holds a descriptor of its own while it runs.
    Ok(std::fs::read_dir(dir)?.count().saturating_sub(1))
}

/// Whether the admin endpoint may accept one more connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// It may.
    Yes,
    /// It may not: only `free` descriptors are free below `limit`.
    No { free: usize, limit: usize },
}

/// The last count of open descriptors, and how many connections the endpoint had then.
#[derive(Debug, Clone, Copy)]
struct Count {
    at: Instant,
    open: usize,
    connections: usize,
}

/// Decides, before each accept, whether the reserve allows one more connection.
#[derive(Debug)]
pub(super) struct Reserve {
    reserve: usize,
    source: Descriptors,
    last: Option<Count>,
    /// False once counting failed for another reason than a lack of descriptors (no
    /// `/proc`): the reserve is then not enforced, and `max_connections` alone bounds.
    countable: bool,
}

impl Reserve {
    pub(super) fn new(reserve: usize, source: Descriptors) -> Self {
        Reserve {
            reserve,
            source,
            last: None,
            countable: true,
        }
    }

    /// How many descriptors it keeps free.
    pub(super) fn size(&self) -> usize {
        self.reserve
    }

    /// Whether one more connection leaves at least the reserve free, while the endpoint
    /// holds `connections`.
    pub(super) fn check(&mut self, connections: usize) -> Room {
        if self.reserve == 0 || !self.countable {
            return Room::Yes;
        }
        let Some(limit) = (self.source.limit)() else {
            return Room::Yes;
        };
        let now = Instant::now();
        if let Some(last) = self.last
            && now.duration_since(last.at) < RECOUNT
        {
            // Connections closed since are not subtracted: the estimate errs high.
            let open = last.open + connections.saturating_sub(last.connections);
            if limit.saturating_sub(open) >= 2 * self.reserve {
                return Room::Yes;
            }
        }
        let open = match (self.source.open)() {
            Ok(open) => open,
            // Not even the listing got a descriptor: none is free.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                self.last = None;
                return Room::No { free: 0, limit };
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot count open file descriptors; the admin endpoint's `fd_reserve` is not enforced");
                self.countable = false;
                return Room::Yes;
            }
        };
        self.last = Some(Count {
            at: now,
            open,
            connections,
        });
        let free = limit.saturating_sub(open);
        // Accepting takes one: what is left must still be the reserve.
        if free > self.reserve {
            Room::Yes
        } else {
            Room::No { free, limit }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A source with a limit of 256 and the open count in `open`, counting the listings.
    fn source(open: &Arc<AtomicUsize>, listings: &Arc<AtomicUsize>) -> Descriptors {
        let (open, listings) = (Arc::clone(open), Arc::clone(listings));
        Descriptors::new(
            || Some(256),
            move || {
                listings.fetch_add(1, Ordering::Relaxed);
                Ok(open.load(Ordering::Relaxed))
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn far_from_the_limit_it_counts_once_a_second_and_estimates_in_between() {
        let (open, listings) = (Arc::new(AtomicUsize::new(20)), Arc::default());
        let mut reserve = Reserve::new(64, source(&open, &listings));
        for connections in 0..50 {
            assert_eq!(reserve.check(connections), Room::Yes);
        }
        assert_eq!(listings.load(Ordering::Relaxed), 1);
        tokio::time::advance(RECOUNT).await;
        assert_eq!(reserve.check(50), Room::Yes);
        assert_eq!(listings.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn near_the_limit_it_counts_every_time_and_keeps_the_reserve() {
        let (open, listings) = (Arc::new(AtomicUsize::new(20)), Arc::default());
        let mut reserve = Reserve::new(64, source(&open, &listings));
        assert_eq!(reserve.check(0), Room::Yes);
        // Its own connections bring the estimate within twice the reserve: it counts.
        open.store(150, Ordering::Relaxed);
        assert_eq!(reserve.check(130), Room::Yes);
        assert_eq!(listings.load(Ordering::Relaxed), 2);
        // Something else in the process took descriptors meanwhile.
        open.store(192, Ordering::Relaxed);
        assert_eq!(
            reserve.check(131),
            Room::No {
                free: 64,
                limit: 256
            }
        );
        assert_eq!(listings.load(Ordering::Relaxed), 3);
        open.store(191, Ordering::Relaxed);
        assert_eq!(reserve.check(131), Room::Yes);
    }

    #[test]
    fn a_listing_that_finds_no_descriptor_means_no_room_and_other_failures_turn_it_off() {
        let mut full = Reserve::new(
            8,
            Descriptors::new(
                || Some(256),
                || Err(io::Error::from_raw_os_error(libc::EMFILE)),
            ),
        );
        assert_eq!(
            full.check(0),
            Room::No {
                free: 0,
                limit: 256
            }
        );
        let mut blind = Reserve::new(
            8,
            Descriptors::new(|| Some(256), || Err(io::ErrorKind::NotFound.into())),
        );
        assert_eq!(blind.check(0), Room::Yes);
        assert!(!blind.countable);
        let mut off = Reserve::new(0, Descriptors::new(|| Some(1), || Ok(1)));
        assert_eq!(off.check(0), Room::Yes);
    }

    #[test]
    fn the_process_count_is_plausible() {
        // Other tests open descriptors meanwhile: only bounds hold.
        let open = open_descriptors().unwrap();
        assert!(open >= 3, "stdin, stdout and stderr at least: {open}");
        assert!(soft_limit().is_none_or(|limit| limit >= open));
    }
}
