//! A model of the deployer, checked against the real one on random sequences of file
//! operations with scans in between.
//!
//! The model is the rules of `isopace-deploy`'s README, written as simply as possible:
//! files apply in lexical order; an enabled, valid descriptor wants its component; a
//! disabled one wants nothing; a file that no longer parses keeps the version it had running;
//! the first file in lexical order to want a name wins it and later ones are failures. After
//! every scan the host's running set, the version of each running component, which
//! components were started and stopped by that scan, and the deployer's per-file status
//! must equal the model's; a second scan right after must change nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use isopace_deploy::FileState;
use isopace_host::{Phase, State};
use isopace_tests::{Fixture, FixtureOptions, PROBE_TYPE, probe_descriptor};
use proptest::{
    prelude::*,
    test_runner::{RngSeed, TestCaseError},
};
use serde_json::json;

const FILES: usize = 6;
const NAMES: usize = 4;

fn file_name(file: usize) -> String {
    format!("f{file}.json")
}

fn component_name(name: usize) -> String {
    format!("n{name}")
}

/// A way a descriptor file can be broken so it no longer parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corruption {
    /// Cut off halfway, as a reader sees a write in progress.
    Truncated,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// A top-level field descriptors do not have.
    UnknownField,
}

/// What one step does to the descriptor directory.
#[derive(Debug, Clone)]
enum Op {
    /// Writes a new enabled descriptor for component `name` (replacing the file if it exists).
    Create { file: usize, name: usize },
    /// Writes a new version of the file's descriptor, same name (a broken file is repaired
    /// to its last valid descriptor).
    Modify { file: usize },
    /// Renames a file, replacing the target if it exists.
    Rename { from: usize, to: usize },
    /// Removes a file.
    Remove { file: usize },
    /// Sets `"enabled": false`.
    Disable { file: usize },
    /// Sets `"enabled": true`.
    Enable { file: usize },
    /// Writes a new version of `file` that declares the name `of` declares.
    Duplicate { file: usize, of: usize },
    /// Breaks the file.
    Corrupt { file: usize, how: Corruption },
}

/// One step: an operation, how the file is written, and whether a scan follows.
#[derive(Debug, Clone)]
struct Step {
    op: Op,
    in_place: bool,
    scan: bool,
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..FILES;
    prop_oneof![
        3 => (file.clone(), 0..NAMES).prop_map(|(file, name)| Op::Create { file, name }),
        2 => file.clone().prop_map(|file| Op::Modify { file }),
        1 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => file.clone().prop_map(|file| Op::Remove { file }),
        1 => file.clone().prop_map(|file| Op::Disable { file }),
        1 => file.clone().prop_map(|file| Op::Enable { file }),
        1 => (file.clone(), file.clone()).prop_map(|(file, of)| Op::Duplicate { file, of }),
        2 => (
            file,
            prop_oneof![
                Just(Corruption::Truncated),
                Just(Corruption::NotUtf8),
                Just(Corruption::UnknownField),
            ]
        )
            .prop_map(|(file, how)| Op::Corrupt { file, how }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (op(), any::<bool>(), any::<bool>()).prop_map(|(op, in_place, scan)| Step {
        op,
        in_place,
        scan,
    })
}

/// A valid descriptor as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Desc {
    name: String,
    enabled: bool,
    tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Valid(Desc),
    Corrupt(Corruption, Desc),
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Valid(d) => descriptor_text(d).into_bytes(),
            Content::Corrupt(Corruption::Truncated, d) => {
                let text = descriptor_text(d);
                text.as_bytes()[..text.len() / 2].to_vec()
            }
            Content::Corrupt(Corruption::NotUtf8, d) => {
                let mut bytes = format!(
                    r#"{{"name": "{}", "type": "probe", "config": {{"tag": ""#,
                    d.name
                )
                .into_bytes();
                bytes.extend_from_slice(b"\xc3\x28\"}}");
                bytes
            }
            Content::Corrupt(Corruption::UnknownField, d) => json!({
                "name": d.name, "type": PROBE_TYPE, "config": { "tag": d.tag }, "colour": "red"
            })
            .to_string()
            .into_bytes(),
        }
    }

    /// The descriptor it holds or last held when valid.
    fn desc(&self) -> &Desc {
        match self {
            Content::Valid(d) | Content::Corrupt(_, d) => d,
        }
    }
}

fn descriptor_text(d: &Desc) -> String {
    json!({ "name": d.name, "type": PROBE_TYPE, "enabled": d.enabled, "config": { "tag": d.tag } })
        .to_string()
}

/// What the deployer must show after a scan.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    /// Running component → the tag of its version.
    running: BTreeMap<String, String>,
    /// File → its state and the component name its status shows.
    statuses: BTreeMap<String, (FileState, Option<String>)>,
    /// Components this scan started, sorted.
    started: Vec<String>,
    /// Components this scan stopped, sorted.
    stopped: Vec<String>,
}

#[derive(Debug, Default)]
struct Model {
    files: BTreeMap<usize, Content>,
    /// What each file has running, as of the last scan.
    running: BTreeMap<usize, Desc>,
    next_tag: usize,
}

impl Model {
    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("t{}", self.next_tag)
    }

    /// Applies `op` to the model; returns the files to write and remove, in that order, or
    /// `None` when the op does not apply (a missing file, a rename onto itself).
    fn apply(&mut self, op: &Op) -> Option<Change> {
        match *op {
            Op::Create { file, name } => {
                let desc = Desc {
                    name: component_name(name),
                    enabled: true,
                    tag: self.tag(),
                };
                Some(self.set(file, Content::Valid(desc)))
            }
            Op::Modify { file } => {
                let mut desc = self.files.get(&file)?.desc().clone();
                desc.tag = self.tag();
                Some(self.set(file, Content::Valid(desc)))
            }
            Op::Rename { from, to } => {
                if from == to || !self.files.contains_key(&from) {
                    return None;
                }
                let content = self.files.remove(&from)?;
                self.files.insert(to, content);
                Some(Change::Rename(from, to))
            }
            Op::Remove { file } => {
                self.files.remove(&file)?;
                Some(Change::Remove(file))
            }
            Op::Disable { file } | Op::Enable { file } => {
                let Content::Valid(desc) = self.files.get(&file)? else {
                    return None;
                };
                let mut desc = desc.clone();
                desc.enabled = matches!(op, Op::Enable { .. });
                Some(self.set(file, Content::Valid(desc)))
            }
            Op::Duplicate { file, of } => {
                let name = self.files.get(&of)?.desc().name.clone();
                let desc = Desc {
                    name,
                    enabled: true,
                    tag: self.tag(),
                };
                Some(self.set(file, Content::Valid(desc)))
            }
            Op::Corrupt { file, how } => {
                let desc = self.files.get(&file)?.desc().clone();
                Some(self.set(file, Content::Corrupt(how, desc)))
            }
        }
    }

    fn set(&mut self, file: usize, content: Content) -> Change {
        let bytes = content.bytes();
        self.files.insert(file, content);
        Change::Write(file, bytes)
    }

    /// What a scan must produce, and the model's state after it.
    fn scan(&mut self) -> Expected {
        let mut claims: HashMap<String, usize> = HashMap::new();
        let mut running = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for (&file, content) in &self.files {
            let want = match content {
                Content::Valid(d) if d.enabled => Some(d.clone()),
                Content::Valid(_) => None,
                Content::Corrupt(..) => self.running.get(&file).cloned(),
            };
            let mut duplicate = false;
            if let Some(d) = want {
                if claims.contains_key(&d.name) {
                    duplicate = true;
                } else {
                    claims.insert(d.name.clone(), file);
                    running.insert(file, d);
                }
            }
            let (state, name) = match content {
                Content::Corrupt(..) => (
                    FileState::Failed,
                    running.get(&file).map(|d: &Desc| d.name.clone()),
                ),
                Content::Valid(d) if duplicate => (FileState::Failed, Some(d.name.clone())),
                Content::Valid(d) if !d.enabled => (FileState::Disabled, Some(d.name.clone())),
                Content::Valid(d) => (FileState::Deployed, Some(d.name.clone())),
            };
            statuses.insert(file_name(file), (state, name));
        }
        let by_name = |running: &BTreeMap<usize, Desc>| -> BTreeMap<String, (usize, Desc)> {
            running
                .iter()
                .map(|(&file, d)| (d.name.clone(), (file, d.clone())))
                .collect()
        };
        let (before, after) = (by_name(&self.running), by_name(&running));
        // A component runs on untouched when its file and descriptor are the same, or when
        // its file was renamed: the old file is gone, and the file that now has the same
        // descriptor had nothing running.
        let continues = |name: &String| match (before.get(name), after.get(name)) {
            (Some((was_in, was)), Some((now_in, now))) => {
                was == now
                    && (was_in == now_in
                        || !self.files.contains_key(was_in) && !self.running.contains_key(now_in))
            }
            _ => false,
        };
        let started = after
            .keys()
            .filter(|name| !continues(name))
            .cloned()
            .collect();
        let stopped = before
            .keys()
            .filter(|name| !continues(name))
            .cloned()
            .collect();
        self.running = running;
        Expected {
            running: after
                .into_iter()
                .map(|(name, (_, d))| (name, d.tag))
                .collect(),
            statuses,
            started,
            stopped,
        }
    }
}

/// A change to make on disk.
#[derive(Debug)]
enum Change {
    Write(usize, Vec<u8>),
    Rename(usize, usize),
    Remove(usize),
}

impl Change {
    fn make(self, f: &Fixture, in_place: bool) {
        match self {
            Change::Write(file, bytes) if in_place => f.write_in_place(&file_name(file), bytes),
            Change::Write(file, bytes) => f.write(&file_name(file), bytes),
            Change::Rename(from, to) => {
                std::fs::rename(f.path(&file_name(from)), f.path(&file_name(to))).unwrap()
            }
            Change::Remove(file) => f.remove(&file_name(file)),
        }
    }
}

/// What the real deployer and host show after a scan, in the model's terms.
async fn observe(f: &Fixture, events_before: usize) -> Result<Expected, TestCaseError> {
    let status = f.host().status();
    prop_assert!(
        status.iter().all(|s| s.state == State::Running),
        "every component on the host runs: {status:?}"
    );
    let host: BTreeSet<String> = f.host().components().into_iter().collect();
    let running = f.lifecycle().running();
    prop_assert_eq!(&host, &running.keys().cloned().collect::<BTreeSet<_>>());
    let statuses = f
        .deployer()
        .status()
        .into_iter()
        .map(|s| {
            let file = s.file.file_name().unwrap().to_string_lossy().into_owned();
            (file, (s.state, s.name))
        })
        .collect();
    let events = f.lifecycle().events_since(events_before);
    let names = |phase: Phase| -> Vec<String> {
        let mut names: Vec<String> = events
            .iter()
            .filter(|e| e.phase == phase)
            .map(|e| e.component.clone())
            .collect();
        names.sort();
        names
    };
    Ok(Expected {
        running,
        statuses,
        started: names(Phase::Start),
        stopped: names(Phase::Stop),
    })
}

fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let f = Fixture::with_options(FixtureOptions {
            metrics: false,
            ..FixtureOptions::default()
        })
        .await;
        let mut model = Model::default();
        let last = steps.len() - 1;
        for (i, step) in steps.into_iter().enumerate() {
            if let Some(change) = model.apply(&step.op) {
                change.make(&f, step.in_place);
            }
            if !step.scan && i != last {
                continue;
            }
            let before = f.lifecycle().event_count();
            let report = f.scan().await;
            let expected = model.scan();
            let actual = observe(&f, before).await?;
            prop_assert_eq!(
                &actual,
                &expected,
                "after step {} ({:?}): {:#?}",
                i,
                step.op,
                report
            );
            for failure in &report.failures {
                let file = failure.file().file_name().unwrap().to_string_lossy();
                prop_assert_eq!(
                    expected.statuses.get(&*file).map(|s| s.0),
                    Some(FileState::Failed),
                    "a failure was reported for a file the model says is fine: {}",
                    failure
                );
            }

            // A rescan with nothing changed does nothing.
            let before = f.lifecycle().event_count();
            let again = f.scan().await;
            prop_assert!(
                again.is_quiet(),
                "a second scan changed something: {:#?}",
                again
            );
            prop_assert_eq!(f.lifecycle().event_count(), before);
        }
        Ok(())
    })
}

/// 1 000 cases from a fixed seed, so CI is deterministic; `PROPTEST_RNG_SEED=<n>` explores
/// others, and `PROPTEST_CASES` runs more.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(1000);
    if std::env::var_os("PROPTEST_CASES").is_some() {
        config.cases = ProptestConfig::default().cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x150_face);
    }
    // A failure prints its minimal sequence; no regression file is written into the tree.
    config.failure_persistence = None;
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_deployer_matches_the_model(steps in proptest::collection::vec(step(), 1..=12)) {
        check(steps)?;
    }
}

/// Found by the model: a file that no longer parses, whose running version loses its name to
/// an earlier file in the same scan, must be reported once, like any other failure.
#[tokio::test]
async fn a_broken_file_whose_name_is_taken_is_reported_once() {
    let f = Fixture::new().await;
    let v1 = Desc {
        name: "n2".into(),
        enabled: true,
        tag: "t1".into(),
    };
    f.write("f5.json", Content::Valid(v1.clone()).bytes());
    assert_eq!(f.scan().await.deployed, ["n2"]);

    f.write(
        "f5.json",
        Content::Corrupt(Corruption::Truncated, v1).bytes(),
    );
    f.write("f0.json", probe_descriptor("n2", &json!({ "tag": "t2" })));
    let report = f.scan().await;
    assert_eq!(report.failures.len(), 1, "{report:#?}");
    assert_eq!(report.failures[0].file(), f.path("f5.json"));
    f.assert_running("n2", "t2");

    let again = f.scan().await;
    assert!(again.is_quiet(), "{again:#?}");
}
