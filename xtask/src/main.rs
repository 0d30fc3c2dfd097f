//! Project automation for isopace: `cargo xtask ci` runs every check CI runs, in order.
#![forbid(unsafe_code)]

mod bench;
mod tidy;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci      fmt, clippy, test, doc and the tidy checks, stopping at the first failure
  tidy    only the tidy checks (also run by `cargo test -p xtask`)
  bench   every criterion benchmark and the measurements through the release binary, then
          BENCHMARKS.md (extra arguments go to criterion; `bench --binary-only` runs only
          the measurements through the binary and prints their rows)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => run_tidy(),
        Some("bench") => bench::run(&workspace_root(), &args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// One step of `cargo xtask ci`: a name and the cargo command it runs.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        args: &["fmt", "--all", "--check"],
        env: &[],
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    // The CLI's `otel` feature (OTLP export) is off in the workspace build: lint it, and its
    // test against an in-process OTLP receiver, on their own. One feature set for both
    // packages, so the two steps share their dependencies' builds.
    Step {
        name: "clippy otel",
        args: &[
            "clippy",
            "-p",
            "isopace-cli",
            "-p",
            "isopace-otel",
            "--features",
            "isopace-cli/otel",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "test",
        args: &["test", "--workspace", "--locked"],
        env: &[],
    },
    Step {
        name: "test otel",
        args: &[
            "test",
            "-p",
            "isopace-cli",
            "-p",
            "isopace-otel",
            "--features",
            "isopace-cli/otel",
            "--locked",
            "--lib",
            "--test",
            "otel",
        ],
        env: &[],
    },
    // The isopace-otel README's examples of the `otlp` feature: the workspace test builds
    // them without it, as empty programs.
    Step {
        name: "doctest otel",
        args: &[
            "test",
            "-p",
            "isopace-otel",
            "--features",
            "otlp",
            "--locked",
            "--doc",
        ],
        env: &[],
    },
    Step {
        name: "doc",
        args: &[
            "doc",
            "--workspace",
            "--no-deps",
            "--locked",
            "--features",
            "isopace-otel/otlp",
        ],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
];

fn ci() -> Result<(), String> {
    let root = workspace_root();
    let total = Instant::now();
    for step in STEPS {
        let started = Instant::now();
        println!("==> {}: cargo {}", step.name, step.args.join(" "));
        let status = Command::new(cargo())
            .args(step.args)
            .envs(step.env.iter().copied())
            .current_dir(&root)
            .status()
            .map_err(|e| format!("{}: could not run cargo: {e}", step.name))?;
        let secs = started.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!(
                "step `{}` failed after {secs:.1}s ({status}); later steps were not run",
                step.name
            ));
        }
        println!("==> {}: ok in {secs:.1}s", step.name);
    }
    let started = Instant::now();
    println!("==> tidy");
    run_tidy()?;
    println!("==> tidy: ok in {:.1}s", started.elapsed().as_secs_f64());
    println!("ci passed in {:.1}s", total.elapsed().as_secs_f64());
    Ok(())
}

fn run_tidy() -> Result<(), String> {
    let problems = tidy::all_problems(&workspace_root());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

pub(crate) fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
