//! The standard `process_*` metrics of the Prometheus client libraries, read from
//! `/proc/self` each time a registry that has them renders.
//!
//! Names, types and help texts are the client libraries', so dashboards and alerts written
//! for them work unchanged. On systems without `/proc` there is nothing to read and the
//! metrics are absent.

use crate::error::MetricKind;

/// One process metric: its name, type and help text.
#[derive(Debug)]
pub(super) struct Definition {
    pub(super) name: &'static str,
    pub(super) kind: MetricKind,
    pub(super) help: &'static str,
}

const CPU: Definition = Definition {
    name: "process_cpu_seconds_total",
    kind: MetricKind::Counter,
    help: "Total user and system CPU time spent in seconds.",
};
const RESIDENT: Definition = Definition {
    name: "process_resident_memory_bytes",
    kind: MetricKind::Gauge,
    help: "Resident memory size in bytes.",
};
const VIRTUAL: Definition = Definition {
    name: "process_virtual_memory_bytes",
    kind: MetricKind::Gauge,
    help: "Virtual memory size in bytes.",
};
const OPEN_FDS: Definition = Definition {
    name: "process_open_fds",
    kind: MetricKind::Gauge,
    help: "Number of open file descriptors.",
};
const MAX_FDS: Definition = Definition {
    name: "process_max_fds",
    kind: MetricKind::Gauge,
    help: "Maximum number of open file descriptors.",
};
const START_TIME: Definition = Definition {
    name: "process_start_time_seconds",
    kind: MetricKind::Gauge,
    help: "Start time of the process since unix epoch in seconds.",
};

/// Every process metric, whether or not this system can read it: their names are reserved
/// on every system, so a program behaves the same wherever it runs.
pub(super) const ALL: [&Definition; 6] =
    [&CPU, &RESIDENT, &VIRTUAL, &OPEN_FDS, &MAX_FDS, &START_TIME];

/// The process metrics as they are now; those that cannot be read are left out.
pub(super) fn read() -> Vec<(&'static Definition, f64)> {
    #[cfg(target_os = "linux")]
    {
        linux::read()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::{fs, sync::OnceLock};

    use super::{CPU, Definition, MAX_FDS, OPEN_FDS, RESIDENT, START_TIME, VIRTUAL};

    pub(super) fn read() -> Vec<(&'static Definition, f64)> {
        let mut out = Vec::with_capacity(super::ALL.len());
        let units = units();
        if let Some(stat) = fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(Stat::parse)
        {
            let ticks = units.ticks_per_second as f64;
            out.push((&CPU, (stat.utime + stat.stime) as f64 / ticks));
            out.push((
                &RESIDENT,
                stat.rss_pages.saturating_mul(units.page_size) as f64,
            ));
            out.push((&VIRTUAL, stat.vsize as f64));
            // The process started once: the boot time it is counted from is read only once.
            static START: OnceLock<Option<f64>> = OnceLock::new();
            let start = START.get_or_init(|| {
                let boot = parse_boot_time(&fs::read_to_string("/proc/stat").ok()?)?;
                Some(boot as f64 + stat.start_ticks as f64 / ticks)
            });
            if let Some(start) = *start {
                out.push((&START_TIME, start));
            }
        }
        // The listing's own descriptor is counted too, as the other client libraries do.
        if let Ok(fds) = fs::read_dir("/proc/self/fd") {
            out.push((&OPEN_FDS, fds.count() as f64));
        }
        if let Some(max) = fs::read_to_string("/proc/self/limits")
            .ok()
            .as_deref()
            .and_then(parse_max_open_files)
        {
            out.push((&MAX_FDS, max));
        }
        out
    }

    /// The fields of `/proc/self/stat` the metrics need.
    #[derive(Debug, PartialEq)]
    pub(super) struct Stat {
        /// User and system CPU time, in clock ticks.
        pub(super) utime: u64,
        pub(super) stime: u64,
        /// When the process started, in clock ticks after boot.
        pub(super) start_ticks: u64,
        /// Virtual memory size, in bytes.
        pub(super) vsize: u64,
        /// Resident set size, in pages.
        pub(super) rss_pages: u64,
    }

    impl Stat {
        pub(super) fn parse(text: &str) -> Option<Stat> {
            // The command name (field 2) is in parentheses and may hold spaces and
            // parentheses itself; the fields after its last `)` start at field 3.
            let (_, rest) = text.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
            Some(Stat {
                utime: field(14)?,
                stime: field(15)?,
                start_ticks: field(22)?,
                vsize: field(23)?,
                rss_pages: field(24)?,
            })
        }
    }

    /// The boot time, in seconds since the epoch, from `/proc/stat`.
    pub(super) fn parse_boot_time(text: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    /// The soft limit on open files from `/proc/self/limits`; `unlimited` is the largest
    /// limit there is, as the other client libraries report it.
    pub(super) fn parse_max_open_files(text: &str) -> Option<f64> {
        let soft = text
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?;
        if soft == "unlimited" {
            return Some(u64::MAX as f64);
        }
        soft.parse::<u64>().ok().map(|n| n as f64)
    }

    /// The kernel's units for `/proc/self/stat`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(super) struct Units {
        pub(super) ticks_per_second: u64,
        pub(super) page_size: u64,
    }

    /// What the kernel passes every process in its auxiliary vector; read once. Reading
    /// `/proc/self/auxv` rather than calling `sysconf` keeps this crate free of `unsafe` and
    /// of a libc binding. Should it be unreadable: 100 ticks per second (the `USER_HZ` of
    /// every architecture but Alpha) and 4 KiB pages.
    fn units() -> Units {
        static UNITS: OnceLock<Units> = OnceLock::new();
        *UNITS.get_or_init(|| parse_auxv(&fs::read("/proc/self/auxv").unwrap_or_default()))
    }

    pub(super) fn parse_auxv(bytes: &[u8]) -> Units {
        const AT_NULL: usize = 0;
        const AT_PAGESZ: usize = 6;
        const AT_CLKTCK: usize = 17;
        const WORD: usize = size_of::<usize>();
        let word = |bytes: &[u8]| {
            let mut w = [0; WORD];
            w.copy_from_slice(bytes);
            usize::from_ne_bytes(w)
        };
        let mut units = Units {
            ticks_per_second: 100,
            page_size: 4096,
        };
        // Pairs of native words, (type, value), up to an `AT_NULL` entry.
        for entry in bytes.chunks_exact(2 * WORD) {
            let value = word(&entry[WORD..]) as u64;
            match word(&entry[..WORD]) {
                AT_NULL => break,
                AT_PAGESZ if value > 0 => units.page_size = value,
                AT_CLKTCK if value > 0 => units.ticks_per_second = value,
                _ => {}
            }
        }
        units
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::{Stat, Units, parse_auxv, parse_boot_time, parse_max_open_files};

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may set it.
        let text = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 2837 0 0 0 \
                    150 25 0 0 20 0 4 0 123456 987654321 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            Stat::parse(text),
            Some(Stat {
                utime: 150,
                stime: 25,
                start_ticks: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(Stat::parse("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn boot_time_and_the_open_files_limit_are_found_by_their_line() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);

        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), Some(u64::MAX as f64));
        assert_eq!(
            parse_max_open_files("Max processes 10 10 processes\n"),
            None
        );
    }

    #[test]
    fn the_auxiliary_vector_gives_the_tick_rate_and_page_size() {
        let entries: [(usize, usize); 4] = [(6, 65536), (17, 250), (0, 0), (17, 1)];
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()])
            .flatten()
            .collect();
        let units = Units {
            ticks_per_second: 250,
            page_size: 65536,
        };
        assert_eq!(
            parse_auxv(&bytes),
            units,
            "entries after AT_NULL are ignored"
        );
        let defaults = Units {
            ticks_per_second: 100,
            page_size: 4096,
        };
        assert_eq!(parse_auxv(&[]), defaults);
    }

    #[test]
    fn this_process_reads_plausibly() {
        let values = super::read();
        let names: Vec<&str> = values.iter().map(|(d, _)| d.name).collect();
        assert_eq!(
            names,
            [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_start_time_seconds",
                "process_open_fds",
                "process_max_fds",
            ]
        );
        let value = |name: &str| values.iter().find(|(d, _)| d.name == name).map(|v| v.1);
        let resident = value("process_resident_memory_bytes").unwrap_or_default();
        let virtual_ = value("process_virtual_memory_bytes").unwrap_or_default();
        assert!(resident > 0.0 && resident <= virtual_, "{values:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = value("process_start_time_seconds").unwrap_or_default();
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        let open = value("process_open_fds").unwrap_or_default();
        let max = value("process_max_fds").unwrap_or_default();
        assert!(open >= 3.0 && open <= max, "{open} of {max}");
    }
}
