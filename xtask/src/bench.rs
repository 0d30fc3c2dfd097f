//! `cargo xtask bench`: runs every criterion benchmark and the measurements through the
//! release `isopace` binary, and writes BENCHMARKS.md, each speed target beside the baseline
//! measured in the same run.

mod binary;
mod redeploy;
mod short_connections;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// How a target is judged.
enum Rule {
    /// The measurement (ns) is at most this many ns.
    AtMostNs(f64),
    /// The baseline takes at least this many times as long as the measurement.
    FasterBy(f64),
    /// The measurement takes at most this many times as long as the baseline.
    ScalesWithin(f64),
    /// The measurement's throughput is at least this fraction of the baseline's (equal work,
    /// so throughput is the inverse of time).
    ThroughputAtLeast(f64),
    /// A value in milliseconds from an extra record, at most this much.
    AtMostMs(f64),
    /// A count from an extra record, at most this many.
    CountAtMost(f64),
    /// A rate per second from an extra record, at least this many times the baseline's.
    RateAtLeast(f64),
}

struct Target {
    what: &'static str,
    /// A criterion id (`group/function`) or `extra:<file>:<field>`.
    measured: &'static str,
    baseline: Option<&'static str>,
    rule: Rule,
}

const TARGETS: &[Target] = &[
    Target {
        what: "observe: registry counter add, 1 thread",
        measured: "counter_add/registry_1_thread",
        baseline: Some("counter_add/atomic_1_thread"),
        rule: Rule::AtMostNs(10.0),
    },
    Target {
        what: "observe: registry counter add, 2 threads on one counter, vs a shared AtomicU64",
        measured: "counter_add/registry_2_threads",
        baseline: Some("counter_add/atomic_2_threads"),
        rule: Rule::FasterBy(3.0),
    },
    Target {
        what: "config: dot-path get at depth 3, 1 reader",
        measured: "config/1_reader/get_depth3/arc_swap",
        baseline: Some("config/1_reader/get_depth3/rwlock"),
        rule: Rule::AtMostNs(40.0),
    },
    Target {
        what: "config: typed handle read, 1 reader",
        measured: "config/1_reader/handle_read/arc_swap",
        baseline: Some("config/1_reader/handle_read/rwlock"),
        rule: Rule::AtMostNs(5.0),
    },
    Target {
        what: "config: dot-path get, 2 readers + writer, vs RwLock",
        measured: "config/2_readers_1_writer/get_depth3/arc_swap",
        baseline: Some("config/2_readers_1_writer/get_depth3/rwlock"),
        rule: Rule::FasterBy(5.0),
    },
    Target {
        what: "config: typed handle read, 2 readers + writer, vs RwLock",
        measured: "config/2_readers_1_writer/handle_read/arc_swap",
        baseline: Some("config/2_readers_1_writer/handle_read/rwlock"),
        rule: Rule::FasterBy(5.0),
    },
    Target {
        what: "config: snapshot + 3 reads, 2 readers + writer, vs RwLock",
        measured: "config/2_readers_1_writer/snapshot_3_reads/arc_swap",
        baseline: Some("config/2_readers_1_writer/snapshot_3_reads/rwlock"),
        rule: Rule::FasterBy(5.0),
    },
    Target {
        what: "host: deploy + undeploy of 10 000 while running",
        measured: "host/deploy_undeploy_running/10000",
        baseline: None,
        rule: Rule::AtMostNs(25e6),
    },
    Target {
        what: "host: deploy + undeploy of 10 000 under `on-failure` while running",
        measured: "host/deploy_undeploy_running_supervised/10000",
        baseline: Some("host/deploy_undeploy_running/10000"),
        rule: Rule::AtMostNs(25e6),
    },
    Target {
        what: "host: reported failure to restarted instance running, zero backoff",
        measured: "host/restart/in_process_zero_backoff",
        baseline: None,
        rule: Rule::AtMostNs(1e6),
    },
    Target {
        what: "exec: child killed to new child running, zero backoff",
        measured: "exec/killed_child_to_new_child_running",
        baseline: None,
        rule: Rule::AtMostNs(5e6),
    },
    Target {
        what: "host: start + stop of 100 000 vs 10 000 (linear: within 12x)",
        measured: "host/start_stop/100000",
        baseline: Some("host/start_stop/10000"),
        rule: Rule::ScalesWithin(12.0),
    },
    Target {
        what: "deploy: rescan of 10 000 unchanged descriptors vs re-read and compare",
        measured: "deploy/rescan_10000_unchanged/deployer_metadata_first",
        baseline: Some("deploy/rescan_10000_unchanged/baseline_reread_and_compare"),
        rule: Rule::FasterBy(2.0),
    },
    Target {
        what: "deploy: atomic rename to new component started, p95",
        measured: "extra:redeploy_latency:p95_ms",
        baseline: None,
        rule: Rule::AtMostMs(10.0),
    },
    Target {
        what: "deploy: atomic rename to new instance running, through the `isopace` binary, p95",
        measured: "extra:redeploy_binary:p95_ms",
        baseline: None,
        rule: Rule::AtMostMs(10.0),
    },
    Target {
        what: "tcp-proxy: system calls per short connection, all threads (strace, 1 000 \
               connections), vs haproxy's",
        measured: "extra:short_connections:syscalls_per_connection",
        baseline: Some("extra:short_connections:haproxy_syscalls_per_connection"),
        rule: Rule::CountAtMost(25.0),
    },
    Target {
        what: "tcp-proxy: short connections/s through the `isopace` binary vs haproxy (`mode \
               tcp`, `nbthread 1`), same client and upstream",
        measured: "extra:short_connections:connections_per_second",
        baseline: Some("extra:short_connections:haproxy_connections_per_second"),
        rule: Rule::RateAtLeast(1.1),
    },
    Target {
        what: "tcp-proxy: throughput through the proxy vs direct (16 MiB echo), system \
               congestion control",
        measured: "tcp_proxy/throughput/proxied",
        baseline: Some("tcp_proxy/throughput/direct"),
        rule: Rule::ThroughputAtLeast(0.8),
    },
    Target {
        what: "tcp-proxy: the same with `congestion_control: cubic` on the proxy's sockets",
        measured: "tcp_proxy/throughput/proxied_cubic",
        baseline: Some("tcp_proxy/throughput/direct"),
        rule: Rule::ThroughputAtLeast(0.8),
    },
];

/// With this argument, `cargo xtask bench` runs only the measurements through the binary
/// and prints their rows, leaving BENCHMARKS.md alone.
const BINARY_ONLY: &str = "--binary-only";

/// The extra records written by the measurements through the binary.
const THROUGH_BINARY: &[&str] = &["redeploy_binary", "short_connections"];

pub(crate) fn run(root: &Path, extra_args: &[String]) -> Result<(), String> {
    let target = target_dir(root);
    if extra_args.iter().any(|a| a == BINARY_ONLY) {
        through_binary(root, &target)?;
        for t in TARGETS.iter().filter(|t| {
            extra_record(t.measured).is_some_and(|(file, _)| THROUGH_BINARY.contains(&file))
        }) {
            println!("{}", row(&target, t).0);
        }
        return Ok(());
    }
    // Each criterion bench by name: `--benches` would also hand criterion's flags to the
    // libraries' own test harnesses, which reject them.
    for (package, bench) in bench_targets(root)? {
        println!("==> bench {package}/{bench}");
        let status = Command::new(crate::cargo())
            .args(["bench", "--locked", "-p", &package, "--bench", &bench, "--"])
            .args(["--warm-up-time", "1", "--measurement-time", "3"])
            .args(extra_args)
            .current_dir(root)
            .status()
            .map_err(|e| format!("could not run cargo bench: {e}"))?;
        if !status.success() {
            return Err(format!("bench {package}/{bench} failed ({status})"));
        }
    }
    if let Err(e) = through_binary(root, &target) {
        // The criterion results are still worth a report; these rows say "not measured".
        eprintln!("xtask bench: a measurement through the binary failed: {e}");
    }
    let report = report(&target)?;
    let path = root.join("BENCHMARKS.md");
    fs::write(&path, report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Builds the release binary and runs the measurements through it. Their earlier records
/// are removed first, so a failed one is not reported from an older run.
fn through_binary(root: &Path, target: &Path) -> Result<(), String> {
    for name in THROUGH_BINARY {
        let _ = fs::remove_file(target.join("isopace-bench").join(format!("{name}.json")));
    }
    let isopace = binary::build_isopace(root)?;
    redeploy::run(&isopace, target)?;
    short_connections::run(&isopace, target)
}

/// Every `[[bench]]` target of the workspace's packages, as (package, bench).
fn bench_targets(root: &Path) -> Result<Vec<(String, String)>, String> {
    let output = Command::new(crate::cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let mut benches = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bench = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"));
            if is_bench {
                benches.push((
                    package["name"].as_str().unwrap_or_default().to_owned(),
                    target["name"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    benches.sort();
    Ok(benches)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Criterion's mean estimate in ns for `group/function...`, whose directory replaces every
/// `/` after the group's own with `_`.
fn criterion_mean_ns(target: &Path, id: &str) -> Option<f64> {
    let criterion = target.join("criterion");
    // The group name may itself contain `/`; try each split point.
    let parts: Vec<&str> = id.split('/').collect();
    (1..parts.len()).find_map(|split| {
        let group = parts[..split].join("_");
        let function = parts[split..].join("_");
        let file = criterion
            .join(&group)
            .join(&function)
            .join("new/estimates.json");
        let json: Value = serde_json::from_str(&fs::read_to_string(file).ok()?).ok()?;
        json["mean"]["point_estimate"].as_f64()
    })
}

/// The record file and field of an `extra:<file>:<field>` id.
fn extra_record(id: &str) -> Option<(&str, &str)> {
    id.strip_prefix("extra:")?.split_once(':')
}

/// A field of an extra record, `target/isopace-bench/<file>.json`.
fn extra_field(target: &Path, id: &str) -> Option<Value> {
    let (file, field) = extra_record(id)?;
    let text =
        fs::read_to_string(target.join("isopace-bench").join(format!("{file}.json"))).ok()?;
    serde_json::from_str::<Value>(&text)
        .ok()?
        .get(field)
        .cloned()
}

fn value(target: &Path, id: &str) -> Option<f64> {
    if id.starts_with("extra:") {
        extra_field(target, id)?.as_f64()
    } else {
        criterion_mean_ns(target, id)
    }
}

/// Why an extra record's field was not measured: a record says so with a string in place of
/// the number (say, "haproxy not installed").
fn unmeasured_because(target: &Path, id: &str) -> Option<String> {
    extra_field(target, id)?.as_str().map(str::to_owned)
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

/// How a row counts in the report's tally.
#[derive(Debug, PartialEq)]
enum Verdict {
    Met,
    Missed,
    /// Measured only where a tool is installed that is not here; not counted either way.
    NotHere(String),
}

impl Rule {
    /// Whether the goal is judged against the baseline, so cannot be without it.
    fn needs_baseline(&self) -> bool {
        matches!(
            self,
            Rule::FasterBy(_)
                | Rule::ScalesWithin(_)
                | Rule::ThroughputAtLeast(_)
                | Rule::RateAtLeast(_)
        )
    }

    fn show(&self, value: f64) -> String {
        match self {
            Rule::AtMostMs(_) => format!("{value:.1} ms"),
            Rule::CountAtMost(_) => format!("{value:.1}"),
            Rule::RateAtLeast(_) => format!("{value:.0}/s"),
            _ => human_ns(value),
        }
    }
}

/// One row of the table, and how it counts.
fn row(target: &Path, t: &Target) -> (String, Verdict) {
    let Some(measured) = value(target, t.measured) else {
        return match unmeasured_because(target, t.measured) {
            Some(reason) => (
                format!("| {} | not measured: {reason} | | | | — |", t.what),
                Verdict::NotHere(reason),
            ),
            None => (
                format!("| {} | not measured | | | | no |", t.what),
                Verdict::Missed,
            ),
        };
    };
    let baseline = t.baseline.and_then(|b| value(target, b));
    let (goal, ratio, met) = match t.rule {
        Rule::AtMostNs(limit) => (
            format!("≤ {}", human_ns(limit)),
            baseline.map(|b| format!("{:.2}x the baseline", measured / b)),
            measured <= limit,
        ),
        Rule::AtMostMs(limit) => (format!("≤ {limit} ms"), None, measured <= limit),
        Rule::CountAtMost(limit) => (
            format!("≤ {limit}"),
            baseline.map(|b| format!("{:.2}x the baseline", measured / b)),
            measured <= limit,
        ),
        Rule::FasterBy(factor) => {
            let r = baseline.map(|b| b / measured);
            (
                format!("≥ {factor}x faster"),
                r.map(|r| format!("{r:.2}x faster")),
                r.is_some_and(|r| r >= factor),
            )
        }
        Rule::ScalesWithin(factor) => {
            let r = baseline.map(|b| measured / b);
            (
                format!("≤ {factor}x"),
                r.map(|r| format!("{r:.2}x")),
                r.is_some_and(|r| r <= factor),
            )
        }
        Rule::ThroughputAtLeast(fraction) => {
            let r = baseline.map(|b| b / measured);
            (
                format!("≥ {:.0}% of the baseline", fraction * 100.0),
                r.map(|r| format!("{:.0}%", r * 100.0)),
                r.is_some_and(|r| r >= fraction),
            )
        }
        Rule::RateAtLeast(factor) => {
            let r = baseline.map(|b| measured / b);
            (
                format!("≥ {factor}x the baseline"),
                r.map(|r| format!("{r:.2}x")),
                r.is_some_and(|r| r >= factor),
            )
        }
    };
    let baseline_not_here = match baseline {
        None => t.baseline.and_then(|b| unmeasured_because(target, b)),
        Some(_) => None,
    };
    let shown_baseline = match (baseline, &baseline_not_here) {
        (Some(b), _) => t.rule.show(b),
        (None, Some(reason)) => format!("not measured: {reason}"),
        (None, None) => "—".to_owned(),
    };
    let verdict = match baseline_not_here {
        _ if met => Verdict::Met,
        Some(reason) if t.rule.needs_baseline() => Verdict::NotHere(reason),
        _ => Verdict::Missed,
    };
    let line = format!(
        "| {} | {} | {shown_baseline} | {} | {goal} | {} |",
        t.what,
        t.rule.show(measured),
        ratio.unwrap_or_else(|| "—".to_owned()),
        match verdict {
            Verdict::Met => "yes",
            Verdict::Missed => "**no**",
            Verdict::NotHere(_) => "—",
        }
    );
    (line, verdict)
}

fn report(target: &Path) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench`: every criterion benchmark of the workspace, run with \
         `--warm-up-time 1 --measurement-time 3`, then the measurements through the release \
         `isopace` binary (xtask/src/bench/). Each baseline is measured in the same run as \
         what it is compared with. Times are criterion's mean estimates.\n"
    );
    let _ = writeln!(out, "{}", machine());
    let _ = writeln!(
        out,
        "| target | measured | baseline (same run) | ratio | goal | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let (mut met, mut counted) = (0, 0);
    let (mut missing, mut not_here) = (Vec::new(), Vec::new());
    for t in TARGETS {
        let (line, verdict) = row(target, t);
        let _ = writeln!(out, "{line}");
        match verdict {
            Verdict::Met => (met, counted) = (met + 1, counted + 1),
            Verdict::Missed => counted += 1,
            Verdict::NotHere(reason) => not_here.push(reason),
        }
        if value(target, t.measured).is_none() {
            missing.push(t.measured);
        }
    }
    let _ = write!(out, "\n{met} of {counted} targets met.");
    if !not_here.is_empty() {
        not_here.dedup();
        let _ = write!(
            out,
            " Not measured here, so not counted: {} ({}).",
            TARGETS.len() - counted,
            not_here.join("; ")
        );
    }
    let _ = writeln!(out);
    if !missing.is_empty() {
        eprintln!("xtask bench: no measurement for {}", missing.join(", "));
    }
    Ok(out)
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.0} GiB", kb / 1048576.0),
        );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let sysctl = |path: &str| {
        fs::read_to_string(path).map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
    };
    format!(
        "Machine: {cores} cores ({cpu}), {memory} memory, Linux {}, TCP congestion control {}, \
         {}; measured {}.\n",
        sysctl("/proc/sys/kernel/osrelease"),
        sysctl("/proc/sys/net/ipv4/tcp_congestion_control"),
        first_line("rustc", &["--version"]),
        first_line("date", &["-u", "+%Y-%m-%d"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_estimates_and_extra_records() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let estimates = dir.join("criterion/config_1_reader/get_depth3_arc_swap/new");
        fs::create_dir_all(&estimates).unwrap();
        fs::write(
            estimates.join("estimates.json"),
            r#"{"mean": {"point_estimate": 15.5}}"#,
        )
        .unwrap();
        fs::create_dir_all(dir.join("isopace-bench")).unwrap();
        fs::write(
            dir.join("isopace-bench/redeploy_latency.json"),
            r#"{"p95_ms": 52.5}"#,
        )
        .unwrap();
        let get = value(&dir, "config/1_reader/get_depth3/arc_swap");
        let p95 = value(&dir, "extra:redeploy_latency:p95_ms");
        let missing = value(&dir, "host/start_stop/10");
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(get, Some(15.5));
        assert_eq!(p95, Some(52.5));
        assert_eq!(missing, None);
    }

    #[test]
    fn every_target_names_a_bench_of_the_workspace() {
        let benches = bench_targets(&crate::workspace_root()).expect("cargo metadata");
        for (package, bench) in [
            ("isopace-observe", "observe"),
            ("isopace-config", "config"),
            ("isopace-host", "host"),
            ("isopace-deploy", "deploy"),
            ("isopace-builtins", "tcp_proxy"),
        ] {
            assert!(
                benches.contains(&(package.to_owned(), bench.to_owned())),
                "{package}/{bench} missing from {benches:?}"
            );
        }
    }

    #[test]
    fn judges_counts_and_rates_and_leaves_out_what_needs_a_missing_tool() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-rows-{}", std::process::id()));
        fs::create_dir_all(dir.join("isopace-bench")).unwrap();
        let target = |measured: &str| {
            TARGETS
                .iter()
                .find(|t| t.measured == measured)
                .expect("a target")
        };
        let syscalls = target("extra:short_connections:syscalls_per_connection");
        let rate = target("extra:short_connections:connections_per_second");
        let rows = |record: &str| {
            fs::write(dir.join("isopace-bench/short_connections.json"), record).unwrap();
            (row(&dir, syscalls), row(&dir, rate))
        };

        let ((count, counted), (per_second, compared)) = rows(
            r#"{"syscalls_per_connection": 24.5, "haproxy_syscalls_per_connection": 25,
                "connections_per_second": 8000, "haproxy_connections_per_second": 7000}"#,
        );
        let not_installed = rows(
            r#"{"syscalls_per_connection": 26, "haproxy_syscalls_per_connection": "haproxy not installed",
                "connections_per_second": 8000, "haproxy_connections_per_second": "haproxy not installed"}"#,
        );
        let ((slower, _), (_, missed)) = rows(
            r#"{"syscalls_per_connection": "strace not installed",
                "connections_per_second": 7000, "haproxy_connections_per_second": 7000}"#,
        );
        fs::remove_dir_all(&dir).unwrap();

        assert_eq!(counted, Verdict::Met);
        assert!(
            count.ends_with("| 24.5 | 25.0 | 0.98x the baseline | ≤ 25 | yes |"),
            "{count}"
        );
        assert_eq!(compared, Verdict::Met);
        assert!(per_second.ends_with("| 8000/s | 7000/s | 1.14x | ≥ 1.1x the baseline | yes |"));
        let ((count, counted), (per_second, compared)) = not_installed;
        assert_eq!(
            counted,
            Verdict::Missed,
            "a count is judged without its baseline"
        );
        assert!(
            count.ends_with("| 26.0 | not measured: haproxy not installed | — | ≤ 25 | **no** |")
        );
        let haproxy = Verdict::NotHere("haproxy not installed".to_owned());
        assert_eq!(compared, haproxy);
        assert!(per_second.contains("| 8000/s | not measured: haproxy not installed | — |"));
        assert!(
            slower.contains("| not measured: strace not installed |"),
            "{slower}"
        );
        assert_eq!(missed, Verdict::Missed);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ns(12.345), "12.35 ns");
        assert_eq!(human_ns(25e6), "25.00 ms");
    }
}
