//! The stable-toolchain driver: replays a corpus, then mutates it at random for a while.
//!
//! Without libFuzzer there is no coverage feedback, so this finds less than `cargo fuzz run`;
//! it exists so the targets run (and their corpora replay as regression tests) on a stable
//! toolchain. A failing input is written to `artifacts/<target>/` and the process exits 1.

use std::{
    fs,
    hash::{DefaultHasher, Hash, Hasher},
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

/// Byte strings the mutator splices in: the syntax the parsers care about.
const TOKENS: &[&[u8]] = &[
    b"${",
    b"}",
    b":-",
    b"$${",
    b"$",
    b"\"",
    b"\\",
    b"\\u00",
    b"\\\"",
    b"{",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b" ",
    b"\"name\"",
    b"\"type\"",
    b"\"config\"",
    b"\"enabled\"",
    b"\"link\"",
    b"\"raw\"",
    b"\"host\"",
    b"\"port\"",
    b"\"timeout\"",
    b"\"routes\"",
    b"${HOST}",
    b"${QUOTED}",
    b"${NESTED}",
    b"${UNSET}",
    b"${EMPTY:-x}",
    b"${UNSET:-${HOST}}",
    b"F_",
    b"F_LINK_MAX_CONNS=",
    b"F_LINK__MAX_CONNS=",
    b"F_SERVER_PORT=",
    b"F_DB_PASSWORD=",
    b"__",
    b"_",
    b"=",
    b"null",
    b"true",
    b"-1",
    b"1e309",
    b"18446744073709551616",
    b"0.",
    b"9223372036854775807",
    b"h",
    b"m",
    b"s",
    b"ms",
    b"us",
    b"\xc2\xb5s",
    b"ns",
    b".",
    b"+",
    b"-",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xa8",
];

/// A small, fast PRNG (xorshift64*): reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            2 | 3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            5 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(32)).min(input.len());
                let piece = input[start..end].to_vec();
                input.splice(at..at, piece);
            }
            _ => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(64)).min(other.len());
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
        }
    }
    input.truncate(4096);
}

fn read_corpus(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for entry in entries {
                if let Ok(bytes) = fs::read(&entry) {
                    inputs.push((entry, bytes));
                }
            }
        } else if let Ok(bytes) = fs::read(path) {
            inputs.push((path.clone(), bytes));
        }
    }
    inputs
}

/// Runs `target` on `input`; on a panic, saves the input and returns its path.
fn run(name: &str, target: fn(&[u8]), input: &[u8]) -> Result<(), PathBuf> {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_ok() {
        return Ok(());
    }
    let mut hasher = DefaultHasher::new();
    input.hash(&mut hasher);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(name);
    let file = dir.join(format!("crash-{:016x}", hasher.finish()));
    let _ = fs::create_dir_all(&dir);
    let _ = fs::write(&file, input);
    Err(file)
}

/// `<target> [--seconds N] [--seed S] [PATH...]`: replays the files in each PATH (default:
/// `seeds/<target>` and `corpus/<target>`), then runs random mutations of them for N seconds
/// (default 10).
pub fn main(name: &str, target: fn(&[u8])) -> ExitCode {
    let mut seconds = 10u64;
    let mut seed = 0x1505_ace0_f00d_u64;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(seed),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        paths = vec![
            root.join("seeds").join(name),
            root.join("corpus").join(name),
        ];
    }
    let corpus = read_corpus(&paths);
    for (path, input) in &corpus {
        if let Err(saved) = run(name, target, input) {
            eprintln!(
                "{name}: {} fails; saved as {}",
                path.display(),
                saved.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let inputs: Vec<Vec<u8>> = if corpus.is_empty() {
        vec![Vec::new()]
    } else {
        corpus.into_iter().map(|(_, bytes)| bytes).collect()
    };
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let mut input = inputs[rng.below(inputs.len())].clone();
            mutate(&mut rng, &mut input, &inputs);
            runs += 1;
            if let Err(saved) = run(name, target, &input) {
                eprintln!(
                    "{name}: a mutated input fails; saved as {}",
                    saved.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{name}: replayed {} inputs, ran {runs} mutations in {seconds}s (seed {seed}), no failure",
        inputs.len()
    );
    ExitCode::SUCCESS
}
