//! The state directory: a record of every running child, so that when the daemon was
//! killed the next start can kill what it left behind.
//!
//! ```text
//! <state dir>/children/<daemon pid>.<start time>/<child pid>.json
//! ```
//!
//! One directory per daemon process, named by its pid and start time: a later start
//! reclaims only the directories of daemon processes that no longer run, so daemons sharing
//! a state directory leave each other's children alone. A record names the child by pid
//! and start time (a reused pid is not the child), the boot it started in, and its cgroup.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{cgroup, procfs, supervisor::SupervisorError, tree::signal_process};

/// What is remembered of a running child.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    component: String,
    pid: i32,
    start_time: u64,
    #[serde(default)]
    boot_id: Option<String>,
    #[serde(default)]
    cgroup: Option<PathBuf>,
}

/// A state directory this process records its children in.
#[derive(Debug)]
pub(super) struct StateDir {
    root: PathBuf,
    /// `children/<pid>.<start time>` of this process.
    mine: PathBuf,
}

impl StateDir {
    /// Creates (mode 0700) or opens the state directory `root`, which must belong to this
    /// user and be writable by no one else: what it records decides what a later start
    /// kills.
    pub(super) fn open(root: &Path) -> Result<StateDir, SupervisorError> {
        let error = |source| SupervisorError::StateDir {
            path: root.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(error)?;
        let meta = fs::metadata(root).map_err(error)?;
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        let unsafe_reason = if !meta.is_dir() {
            Some("not a directory")
        } else if meta.uid() != me {
            Some("owned by another user")
        } else if meta.mode() & 0o022 != 0 {
            Some("writable by other users")
        } else {
            None
        };
        if let Some(reason) = unsafe_reason {
            return Err(SupervisorError::UnsafeStateDir {
                path: root.to_owned(),
                reason,
            });
        }
        let (pid, start) = procfs::this_process();
        let mine = root.join("children").join(format!("{pid}.{start}"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&mine)
            .map_err(error)?;
        Ok(StateDir {
            root: root.to_owned(),
            mine,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.root
    }

    /// Records a running child; the record goes when [`Record::remove`] is called.
    pub(super) fn record(
        &self,
        component: &str,
        pid: u32,
        start_time: u64,
        cgroup: Option<&Path>,
    ) -> io::Result<Record> {
        let entry = Entry {
            component: component.to_owned(),
            pid: pid as i32,
            start_time,
            boot_id: procfs::boot_id(),
            cgroup: cgroup.map(Path::to_owned),
        };
        let path = self.mine.join(format!("{pid}.json"));
        let tmp = self.mine.join(format!("{pid}.json.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(&entry).map_err(io::Error::other)?)?;
        fs::rename(&tmp, &path)?;
        Ok(Record {
            path,
            removed: false,
        })
    }

    /// Kills what daemon processes that no longer run left behind, by their records, and
    /// removes the records. Returns how many processes and cgroups it killed and removed,
    /// and how many records it read.
    pub(super) async fn reclaim(&self) -> super::Reclaimed {
        let mut done = super::Reclaimed::default();
        let boot = procfs::boot_id();
        let Ok(owners) = fs::read_dir(self.root.join("children")) else {
            return done;
        };
        for owner in owners.flatten().map(|e| e.path()) {
            if owner == self.mine {
                continue;
            }
            let Some((pid, start)) = owner
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_owner)
            else {
                continue;
            };
            if procfs::is_running(pid, start) {
                continue;
            }
            let Ok(records) = fs::read_dir(&owner) else {
                continue;
            };
            for file in records.flatten().map(|e| e.path()) {
                if file.extension().is_some_and(|e| e == "json") {
                    done.records += 1;
                    reclaim_one(&file, boot.as_deref(), &mut done).await;
                }
                let _ = fs::remove_file(&file);
            }
            let _ = fs::remove_dir(&owner);
        }
        if done.processes > 0 || done.cgroups > 0 {
            tracing::warn!(
                processes = done.processes,
                cgroups = done.cgroups,
                state_dir = %self.root.display(),
                "killed what the exec children of an earlier, killed run left behind"
            );
        } else if done.records > 0 {
            tracing::info!(
                records = done.records,
                state_dir = %self.root.display(),
                "removed the records of an earlier run's exec children; none was left"
            );
        }
        done
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // Only when every record is gone: what is left is for a later start to reclaim.
        let _ = fs::remove_dir(&self.mine);
    }
}

/// A child's record, removed once the child and everything it started are gone.
#[derive(Debug)]
pub(super) struct Record {
    path: PathBuf,
    removed: bool,
}

impl Record {
    pub(super) fn remove(&mut self) {
        if !std::mem::replace(&mut self.removed, true)
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(record = %self.path.display(), error = %e, "cannot remove the child's record");
        }
    }
}

fn parse_owner(name: &str) -> Option<(i32, u64)> {
    let (pid, start) = name.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Kills what one record of a daemon process that no longer runs names.
async fn reclaim_one(file: &Path, boot: Option<&str>, done: &mut super::Reclaimed) {
    let entry: Entry = match fs::read(file)
        .map_err(io::Error::other)
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(io::Error::other))
    {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(record = %file.display(), error = %e, "ignoring an unreadable record of a child");
            return;
        }
    };
    // Start times count from boot: a record from another boot names nothing that runs now.
    if entry.boot_id.is_some() && entry.boot_id.as_deref() != boot {
        return;
    }
    if let Some(dir) = &entry.cgroup
        && cgroup::is_stale_child(dir)
    {
        match cgroup::clear_dir(dir).await {
            Ok(killed) => {
                done.processes += killed;
                done.cgroups += 1;
                cgroup::remove_owner_of(dir);
            }
            Err(e) => {
                tracing::warn!(component = entry.component, cgroup = %dir.display(), error = %e, "cannot clear the cgroup of a child an earlier run left");
            }
        }
    }
    done.processes += kill_session(entry.pid, entry.start_time).await;
}

/// Kills the session and process group of the child `pid` (which started both) and their
/// descendants, when the numbers still belong to it; returns how many processes it killed.
async fn kill_session(pid: i32, start_time: u64) -> usize {
    let Ok(procs) = procfs::all() else {
        return 0;
    };
    // While a process is in the child's session or group, the kernel keeps the number from
    // being reused: a different process under the child's pid means both are gone.
    if procs
        .iter()
        .any(|p| p.pid == pid && p.start_time != start_time)
    {
        return 0;
    }
    let me = std::process::id() as i32;
    let candidate = |p: &&procfs::Stat| p.is_live() && p.pid > 1 && p.pid != me;
    let mut victims: Vec<(i32, u64)> = procs
        .iter()
        .filter(candidate)
        .filter(|p| p.session == pid || p.pgrp == pid)
        .map(|p| (p.pid, p.start_time))
        .collect();
    loop {
        let before = victims.len();
        for p in procs.iter().filter(candidate) {
            if victims.iter().any(|&(v, _)| v == p.ppid)
                && !victims.iter().any(|&(v, _)| v == p.pid)
            {
                victims.push((p.pid, p.start_time));
            }
        }
        if victims.len() == before {
            break;
        }
    }
    for &(victim, _) in &victims {
        signal_process(victim, libc::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while victims
        .iter()
        .any(|&(v, start)| procfs::is_running(v, start))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    victims.len()
}
