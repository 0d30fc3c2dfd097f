//! A counter with one cell per thread, so concurrent adds neither contend nor need a locked
//! read-modify-write.
//!
//! Each live thread leases a cell index for its lifetime (returned when the thread exits)
//! and is the only writer of that cell in every counter, so its add is a plain load and
//! store. Threads beyond the leased cells share a few extra cells with atomic adds.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use parking_lot::Mutex;

/// Cells leased to one thread each.
const OWNED: usize = 16;
/// Cells shared, with atomic adds, by threads that found no free lease.
const SHARED: usize = 8;
/// Not yet assigned.
const UNSET: usize = usize::MAX;

/// One cell on a cache line of its own (128 bytes covers adjacent-line prefetching), so
/// threads writing different cells never contend.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A monotonically increasing count spread over per-thread cells.
#[derive(Default)]
pub(crate) struct ShardedCounter {
    cells: [Padded; OWNED + SHARED],
}

impl ShardedCounter {
    #[inline]
    pub(super) fn add(&self, n: u64) {
        let i = cell_index();
        let cell = &self.cells[i].0;
        if i < OWNED {
            // This thread is the cell's only writer: no locked instruction needed.
            cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            cell.fetch_add(n, Relaxed);
        }
    }

    pub(super) fn get(&self) -> u64 {
        self.cells
            .iter()
            .fold(0_u64, |sum, c| sum.wrapping_add(c.0.load(Relaxed)))
    }
}

thread_local! {
    /// This thread's cell: const-initialised and without a destructor so reading it is as
    /// cheap as thread-local access gets.
    static INDEX: Cell<usize> = const { Cell::new(UNSET) };
    /// Holds the lease and gives it back when the thread exits.
    static LEASE: Lease = const { Lease(Cell::new(UNSET)) };
}

#[inline]
fn cell_index() -> usize {
    match INDEX.try_with(Cell::get) {
        Ok(i) if i != UNSET => i,
        _ => assign(),
    }
}

struct Leases {
    /// Indexes never handed out start here.
    next: usize,
    /// Indexes given back by exited threads.
    free: Vec<usize>,
    /// Round-robin over the shared cells.
    next_shared: usize,
}

static LEASES: Mutex<Leases> = Mutex::new(Leases {
    next: 0,
    free: Vec::new(),
    next_shared: 0,
});

#[cold]
fn assign() -> usize {
    let mut leases = LEASES.lock();
    let owned = leases.free.pop().or_else(|| {
        (leases.next < OWNED).then(|| {
            leases.next += 1;
            leases.next - 1
        })
    });
    let index = match owned {
        // Registering the lease fails only while this thread is being torn down; then the
        // index goes straight back.
        Some(i) if LEASE.try_with(|l| l.0.set(i)).is_ok() => i,
        Some(i) => {
            leases.free.push(i);
            shared(&mut leases)
        }
        None => shared(&mut leases),
    };
    // Fails only during teardown, when the next add simply assigns again.
    let _ = INDEX.try_with(|c| c.set(index));
    index
}

fn shared(leases: &mut Leases) -> usize {
    leases.next_shared = leases.next_shared.wrapping_add(1);
    OWNED + leases.next_shared % SHARED
}

struct Lease(Cell<usize>);

impl Drop for Lease {
    fn drop(&mut self) {
        let i = self.0.get();
        if i == UNSET {
            return;
        }
        let mut leases = LEASES.lock();
        // Later adds from this thread's remaining destructors must not touch the cell once
        // another thread may own it.
        let fallback = shared(&mut leases);
        let _ = INDEX.try_with(|c| c.set(fallback));
        // Handing the index over under the lock orders this thread's last store before the
        // next owner's first load.
        leases.free.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_short_lived_threads_all_count() {
        let c = ShardedCounter::default();
        // More threads than leases, in waves, so leases are recycled and shared cells used.
        for _ in 0..3 {
            std::thread::scope(|s| {
                for _ in 0..(OWNED + 4) {
                    s.spawn(|| (0..1000).for_each(|_| c.add(2)));
                }
            });
        }
        assert_eq!(c.get(), 3 * (OWNED as u64 + 4) * 2000);
    }
}
