//! Cgroup v2 containment: a cgroup per `exec` child, inside one per daemon process, so a
//! stop reaches every descendant — also one that started a session of its own — and
//! `cgroup.kill` ends them all in one write.
//!
//! The hierarchy is found through `/proc/self/mountinfo` (on a hybrid host it is not at
//! `/sys/fs/cgroup` but at, say, `/sys/fs/cgroup/unified`) and the process's own cgroup
//! through `/proc/self/cgroup`. Cgroups are created under that own cgroup only when the
//! process may write there: under systemd that takes `Delegate=yes`; as root outside a
//! service manager it usually just works; in an unprivileged container it usually does not,
//! and children are tracked through `/proc` instead.
//!
//! The layout, under the process's own cgroup:
//!
//! ```text
//! isopace-exec.<pid>.<start time>/      this daemon process: created with its first child,
//!     1.worker/                         removed after its last; the name says whose it is
//!     2.batch/                          one per child: <sequence number>.<component>
//! ```
//!
//! The owner's pid and start time in the name let a later run tell a leftover of a killed
//! daemon (owner gone) from a live daemon's (owner running), without any other record.

use std::{
    ffi::{CStr, CString},
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use parking_lot::Mutex;

use super::procfs;

/// The prefix of a daemon process's cgroup name.
const OWNER_PREFIX: &str = "isopace-exec.";
/// How deep a child's own sub-cgroups are followed.
const MAX_DEPTH: usize = 8;

/// Where cgroup v2 is mounted, and this process's own cgroup in it.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    own: PathBuf,
}

/// The hierarchy, or why there is none (process-wide: a process has one cgroup).
fn hierarchy() -> &'static Result<Hierarchy, String> {
    static HIERARCHY: OnceLock<Result<Hierarchy, String>> = OnceLock::new();
    HIERARCHY.get_or_init(find_hierarchy)
}

/// The cgroup directory children's cgroups are created under (this process's own), or
/// why cgroups cannot be used.
pub(super) fn available() -> Result<&'static Path, &'static str> {
    static USABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let hierarchy = hierarchy().as_ref().map_err(String::as_str)?;
    match USABLE.get_or_init(|| probe(&hierarchy.own)) {
        Ok(()) => Ok(&hierarchy.own),
        Err(why) => Err(why),
    }
}

/// The cgroup v2 mount that holds this process's cgroup, from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`.
fn find_hierarchy() -> Result<Hierarchy, String> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 membership in /proc/self/cgroup")?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    mounts
        .lines()
        .filter_map(cgroup2_mount)
        .find_map(|(root, mount)| {
            let rel = if root == "/" {
                own
            } else {
                let rest = own.strip_prefix(root.as_str())?;
                if !rest.is_empty() && !rest.starts_with('/') {
                    return None;
                }
                rest
            };
            let rel = rel.trim_start_matches('/');
            let dir = if rel.is_empty() {
                mount.clone()
            } else {
                mount.join(rel)
            };
            dir.is_dir().then_some(Hierarchy { mount, own: dir })
        })
        .ok_or_else(|| format!("no cgroup2 mount holds this process's cgroup `{own}`"))
}

/// The root and mount point of a `mountinfo` line that mounts cgroup v2.
fn cgroup2_mount(line: &str) -> Option<(String, PathBuf)> {
    // id parent major:minor root mount-point options [optional fields...] - type source ...
    let (head, tail) = line.split_once(" - ")?;
    if tail.split_ascii_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = head.split_ascii_whitespace();
    let root = unescape(fields.nth(3)?);
    let mount_point = unescape(fields.next()?);
    Some((root, PathBuf::from(mount_point)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that cgroups can be made under `own` and children moved into them: the owner
/// cgroup can be created, has `cgroup.kill` (Linux 5.14), and `own`'s `cgroup.procs` is
/// writable (moving a process needs write access where it comes from too).
fn probe(own: &Path) -> Result<(), String> {
    let procs = own.join("cgroup.procs");
    if !writable(&procs) {
        return Err(format!("{} is not writable", procs.display()));
    }
    let owner = own.join(owner_name());
    let created = match fs::create_dir(&owner) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(format!("cannot create a cgroup in {}: {e}", own.display())),
    };
    let killable = owner.join("cgroup.kill").exists();
    if created {
        let _ = fs::remove_dir(&owner);
    }
    if killable {
        Ok(())
    } else {
        Err("the kernel has no cgroup.kill (Linux 5.14 or later)".to_owned())
    }
}

fn writable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path we own and touches no other memory.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// This daemon process's cgroup name: `isopace-exec.<pid>.<start time>`.
fn owner_name() -> String {
    let (pid, start) = procfs::this_process();
    format!("{OWNER_PREFIX}{pid}.{start}")
}

/// The owner's pid and start time from an owner cgroup's name.
fn parse_owner(name: &str) -> Option<(i32, u64)> {
    let (pid, start) = name.strip_prefix(OWNER_PREFIX)?.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// The live children's count, which keeps the owner cgroup, and the last sequence number.
struct Owner {
    live: usize,
    sequence: u64,
}

static OWNER: Mutex<Owner> = Mutex::new(Owner {
    live: 0,
    sequence: 0,
});

/// One child's cgroup. Removed (if empty) when dropped.
#[derive(Debug)]
pub(super) struct ChildCgroup {
    path: PathBuf,
    procs: CString,
    removed: bool,
}

impl ChildCgroup {
    /// A new, empty cgroup for a child of `component`.
    pub(super) fn create(component: &str) -> io::Result<ChildCgroup> {
        let own = available().map_err(io::Error::other)?;
        let owner_dir = own.join(owner_name());
        let mut owner = OWNER.lock();
        match fs::create_dir(&owner_dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        owner.sequence += 1;
        let path = owner_dir.join(format!("{}.{}", owner.sequence, sanitize(component)));
        if let Err(e) = fs::create_dir(&path) {
            if owner.live == 0 {
                let _ = fs::remove_dir(&owner_dir);
            }
            return Err(e);
        }
        owner.live += 1;
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(io::Error::other)?;
        Ok(ChildCgroup {
            path,
            procs,
            removed: false,
        })
    }

    /// The cgroup's directory.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Its `cgroup.procs`, for the child to move itself in before it runs its program.
    pub(super) fn procs(&self) -> &CStr {
        &self.procs
    }

    /// The processes in the cgroup and in any cgroup the child made under it.
    pub(super) fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        collect_pids(&self.path, 0, &mut pids);
        pids
    }

    /// Kills (`SIGKILL`) every process in the cgroup and below.
    pub(super) fn kill(&self) -> io::Result<()> {
        kill_dir(&self.path)
    }

    /// Whether a live process is left in the cgroup or below; zombies do not count.
    pub(super) fn populated(&self) -> bool {
        populated_dir(&self.path).unwrap_or(false)
    }

    /// Removes the cgroup, which must be empty by now; then the owner cgroup with the last.
    pub(super) fn remove(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        let removed = remove_tree(&self.path, 0);
        let mut owner = OWNER.lock();
        owner.live = owner.live.saturating_sub(1);
        if owner.live == 0
            && let Some(owner_dir) = self.path.parent()
        {
            // Another daemon process cannot share this name, and another child of this one
            // would hold the lock while it creates it.
            let _ = fs::remove_dir(owner_dir);
        }
        removed
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// A cgroup name made of `component`: its letters, digits, `-`, `_` and `.`, the rest `_`.
fn sanitize(component: &str) -> String {
    component
        .chars()
        .take(64)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect()
}

fn collect_pids(dir: &Path, depth: usize, pids: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if depth < MAX_DEPTH {
        for sub in subdirs(dir) {
            collect_pids(&sub, depth + 1, pids);
        }
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `1` to `dir`'s `cgroup.kill`: `SIGKILL` to every process in it and below.
fn kill_dir(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.kill"), b"1")
}

/// Whether `dir` or a cgroup below it has a live process (`populated 1` in `cgroup.events`).
fn populated_dir(dir: &Path) -> io::Result<bool> {
    let events = fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(events
        .lines()
        .any(|l| l.split_ascii_whitespace().eq(["populated", "1"])))
}

/// Removes `dir` and the cgroups below it, deepest first.
fn remove_tree(dir: &Path, depth: usize) -> io::Result<()> {
    if depth < MAX_DEPTH {
        for sub in subdirs(dir) {
            let _ = remove_tree(&sub, depth + 1);
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// How long processes killed through `cgroup.kill` may take to leave their cgroup.
const EMPTY_WAIT: Duration = Duration::from_secs(2);
const EMPTY_POLL: Duration = Duration::from_millis(10);

/// Kills everything in the cgroup at `dir`, waits (bounded) until it is empty, and removes
/// it. Returns how many processes it held, or an error when it could not be emptied or
/// removed.
pub(super) async fn clear_dir(dir: &Path) -> io::Result<usize> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut pids = Vec::new();
    collect_pids(dir, 0, &mut pids);
    if populated_dir(dir)? {
        kill_dir(dir)?;
        let deadline = tokio::time::Instant::now() + EMPTY_WAIT;
        while populated_dir(dir)? {
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "processes in {} survived cgroup.kill",
                    dir.display()
                )));
            }
            tokio::time::sleep(EMPTY_POLL).await;
        }
    }
    remove_tree(dir, 0)?;
    Ok(pids.len())
}

/// Whether `dir` names a child cgroup of a daemon process that no longer runs: a cgroup in
/// the cgroup v2 hierarchy whose parent is an owner cgroup (`isopace-exec.<pid>.<start>`)
/// whose owner is gone. A record can only make a later run kill what passes this check.
pub(super) fn is_stale_child(dir: &Path) -> bool {
    let Ok(hierarchy) = hierarchy() else {
        return false;
    };
    let plain = dir.components().all(|c| {
        matches!(
            c,
            std::path::Component::RootDir | std::path::Component::Normal(_)
        )
    });
    let Some(owner) = dir
        .parent()
        .filter(|_| plain && dir.starts_with(&hierarchy.mount))
    else {
        return false;
    };
    owner
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_owner)
        .is_some_and(|(pid, start)| !procfs::is_running(pid, start))
}

/// Kills every process in this daemon process's owner cgroup: every child's cgroup at once.
pub(super) fn kill_owner() {
    // Only a process that made cgroups has one, and only while a child lives in it.
    if OWNER.lock().live == 0 {
        return;
    }
    if let Ok(own) = available() {
        let dir = own.join(owner_name());
        if dir.exists() {
            let _ = kill_dir(&dir);
        }
    }
}

/// Removes the owner cgroup `dir` belongs to, if `dir` is a child cgroup and the owner
/// cgroup is empty now.
pub(super) fn remove_owner_of(dir: &Path) {
    if let Some(owner) = dir.parent()
        && owner
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_owner)
            .is_some()
    {
        let _ = fs::remove_dir(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_name_the_cgroup2_mount() {
        let hybrid =
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(("/".to_owned(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
        let escaped = r"50 1 0:40 /a\040b /mnt/with\040space rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount(escaped),
            Some(("/a b".to_owned(), PathBuf::from("/mnt/with space")))
        );
    }

    #[test]
    fn owner_names_carry_the_pid_and_start_time() {
        assert_eq!(parse_owner("isopace-exec.42.123456"), Some((42, 123456)));
        assert_eq!(parse_owner("isopace-exec.42"), None);
        assert_eq!(parse_owner("system.slice"), None);
        let (pid, start) = procfs::this_process();
        assert_eq!(parse_owner(&owner_name()), Some((pid, start)));
        assert_eq!(sanitize("edge/proxy 1"), "edge_proxy_1");
    }
}
