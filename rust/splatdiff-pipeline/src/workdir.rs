//! A run's work folder and its manifest.
//!
//! Layout: `WORK/manifest.json` and one folder per stage (`WORK/capture`,
//! `WORK/points`, ...). A stage writes into a hidden staging folder
//! (`WORK/.capture.staging`) that only becomes `WORK/capture` by an atomic
//! rename once the stage has finished, and only then does the manifest
//! record it; so an interrupted run never leaves a half-written result that
//! looks finished, and a rerun resumes after the last finished stage.
//!
//! The manifest records each stage's config (settings and inputs) and
//! outputs. A finished stage is reused when it is asked for with the same
//! config, and refused (never silently overwritten) when the config differs:
//! the caller must [`WorkDir::discard`] it, which also discards every stage
//! recorded after it, since they were built from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use splatdiff_scene::atomic::write_bytes_atomic;

use crate::error::{PipelineError, Result};

/// Version of the manifest's layout, bumped on incompatible changes.
pub const MANIFEST_FORMAT: u32 = 1;

/// One stage's entry in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    /// `Running` from [`WorkDir::begin`] until [`WorkDir::commit`].
    pub status: RecordStatus,
    /// The stage's settings and inputs, as its typed config serialised.
    pub config: Value,
    /// What the stage produced (paths relative to the stage folder, figures).
    pub outputs: Value,
    /// Seconds since the Unix epoch when the stage finished.
    pub finished_at: Option<u64>,
    /// The splatdiff version that produced it.
    pub version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    Running,
    Finished,
}

/// The manifest: every stage that was started, in the order they ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub stages: Vec<StageRecord>,
}

impl Manifest {
    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|r| r.name == name)
    }
}

/// Where a stage stands with respect to a requested config.
#[derive(Clone, Debug, PartialEq)]
pub enum StageState {
    /// Finished with this config: reuse its outputs.
    Finished(StageRecord),
    /// Finished with another config: discard it before running again.
    Stale(StageRecord),
    /// Never finished (absent, or interrupted while running).
    Pending,
}

/// A run's work folder.
#[derive(Clone, Debug)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Opens (creating it if needed) a work folder and checks that it can be written.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if root.as_os_str().is_empty() {
            return Err(PipelineError::invalid(&root, "no output folder given"));
        }
        if root.exists() && !root.is_dir() {
            return Err(PipelineError::invalid(&root, "output folder is a file, not a folder"));
        }
        std::fs::create_dir_all(&root)
            .map_err(|e| PipelineError::invalid(&root, format!("cannot create output folder: {e}")))?;
        let probe = root.join(".splatdiff-write-test");
        std::fs::write(&probe, b"")
            .map_err(|e| PipelineError::invalid(&root, format!("output folder is not writable: {e}")))?;
        let _ = std::fs::remove_file(probe);
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    /// The final folder of a stage.
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    fn staging_dir(&self, stage: &str) -> PathBuf {
        self.root.join(format!(".{stage}.staging"))
    }

    /// Reads the manifest; an absent one is empty.
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.manifest_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest { format: MANIFEST_FORMAT, stages: vec![] })
            }
            Err(e) => return Err(PipelineError::io(&path, e)),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| PipelineError::invalid(&path, format!("corrupt manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(PipelineError::invalid(
                &path,
                format!("manifest format {} is not supported (expected {MANIFEST_FORMAT})", manifest.format),
            ));
        }
        Ok(manifest)
    }

    fn save(&self, manifest: &Manifest) -> Result<()> {
        let text = serde_json::to_string_pretty(manifest).expect("manifest serialises");
        write_bytes_atomic(&self.manifest_path(), text.as_bytes())?;
        Ok(())
    }

    /// Where `stage` stands for `config`. A finished record whose folder
    /// was deleted by hand counts as pending.
    pub fn state(&self, stage: &str, config: &Value) -> Result<StageState> {
        let manifest = self.manifest()?;
        Ok(match manifest.stage(stage) {
            Some(r) if r.status == RecordStatus::Finished && self.stage_dir(stage).is_dir() => {
                if &r.config == config {
                    StageState::Finished(r.clone())
                } else {
                    StageState::Stale(r.clone())
                }
            }
            _ => StageState::Pending,
        })
    }

    /// Starts `stage` with `config`: records it as running and returns an
    /// empty staging folder for its outputs. Refuses a stage that finished.
    pub fn begin(&self, stage: &str, config: &Value) -> Result<PathBuf> {
        check_stage_name(&self.root, stage)?;
        match self.state(stage, config)? {
            StageState::Finished(_) => {
                return Err(PipelineError::invalid(
                    self.stage_dir(stage),
                    format!("stage '{stage}' already finished with these settings; reuse it or discard it first"),
                ))
            }
            StageState::Stale(record) => {
                return Err(PipelineError::invalid(
                    self.stage_dir(stage),
                    format!(
                        "stage '{stage}' already finished with other settings ({}); discard it to run it again",
                        describe_changes(&record.config, config)
                    ),
                ))
            }
            StageState::Pending => {}
        }
        let staging = self.staging_dir(stage);
        remove_dir_if_exists(&staging)?;
        std::fs::create_dir_all(&staging).map_err(|e| PipelineError::io(&staging, e))?;
        let mut manifest = self.manifest()?;
        manifest.stages.retain(|r| r.name != stage);
        manifest.stages.push(StageRecord {
            name: stage.to_string(),
            status: RecordStatus::Running,
            config: config.clone(),
            outputs: Value::Null,
            finished_at: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
        });
        self.save(&manifest)?;
        Ok(staging)
    }

    /// Finishes `stage`: its staging folder becomes the stage folder and the
    /// manifest records `outputs`. Returns the stage folder.
    pub fn commit(&self, stage: &str, outputs: Value) -> Result<PathBuf> {
        check_stage_name(&self.root, stage)?;
        let mut manifest = self.manifest()?;
        let Some(record) = manifest.stages.iter_mut().find(|r| r.name == stage && r.status == RecordStatus::Running)
        else {
            return Err(PipelineError::invalid(self.manifest_path(), format!("stage '{stage}' was not started")));
        };
        let staging = self.staging_dir(stage);
        if !staging.is_dir() {
            return Err(PipelineError::invalid(&staging, format!("staging folder of stage '{stage}' is missing")));
        }
        let dest = self.stage_dir(stage);
        // A folder left from a discarded or hand-deleted record is not a
        // finished result (the manifest does not list it), so it may go.
        remove_dir_if_exists(&dest)?;
        std::fs::rename(&staging, &dest).map_err(|e| PipelineError::io(&dest, e))?;
        record.status = RecordStatus::Finished;
        record.outputs = outputs;
        record.finished_at =
            Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
        self.save(&manifest)?;
        Ok(dest)
    }

    /// Deletes `stage` (finished or not) and every stage recorded after it.
    pub fn discard(&self, stage: &str) -> Result<()> {
        check_stage_name(&self.root, stage)?;
        let mut manifest = self.manifest()?;
        let from = manifest.stages.iter().position(|r| r.name == stage).unwrap_or(manifest.stages.len());
        let dropped: Vec<String> = manifest.stages.drain(from..).map(|r| r.name).collect();
        // The manifest forgets them first, so a crash in between leaves
        // folders that are merely unlisted, never listed-but-missing.
        self.save(&manifest)?;
        for name in dropped.iter().map(String::as_str).chain([stage]) {
            remove_dir_if_exists(&self.stage_dir(name))?;
            remove_dir_if_exists(&self.staging_dir(name))?;
        }
        Ok(())
    }
}

fn check_stage_name(root: &Path, stage: &str) -> Result<()> {
    let ok = !stage.is_empty() && stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok && stage != "manifest" {
        Ok(())
    } else {
        Err(PipelineError::invalid(root, format!("'{stage}' is not a valid stage name")))
    }
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PipelineError::io(path, e)),
    }
}

/// Names the top-level settings that differ, for the "already finished" message.
fn describe_changes(old: &Value, new: &Value) -> String {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            let changed: Vec<String> = keys
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "unset".into());
                    format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
                })
                .collect();
            if changed.is_empty() {
                "no visible change".into()
            } else {
                changed.join(", ")
            }
        }
        _ => "settings changed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn work() -> (tempfile::TempDir, WorkDir) {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::open(dir.path().join("run")).unwrap();
        (dir, work)
    }

    #[test]
    fn a_committed_stage_is_reused_only_with_the_same_config() {
        let (_d, w) = work();
        let cfg = json!({"frames": 36});
        let staging = w.begin("capture", &cfg).unwrap();
        std::fs::write(staging.join("a.txt"), "x").unwrap();
        assert_eq!(w.state("capture", &cfg).unwrap(), StageState::Pending, "running is not finished");
        let dir = w.commit("capture", json!({"frames": 36})).unwrap();
        assert!(dir.join("a.txt").exists());
        assert!(!staging.exists());
        assert!(matches!(w.state("capture", &cfg).unwrap(), StageState::Finished(_)));
        assert!(matches!(w.state("capture", &json!({"frames": 24})).unwrap(), StageState::Stale(_)));
    }

    #[test]
    fn a_finished_stage_is_never_overwritten_silently() {
        let (_d, w) = work();
        w.begin("capture", &json!({"frames": 36})).unwrap();
        w.commit("capture", Value::Null).unwrap();
        let err = w.begin("capture", &json!({"frames": 24})).unwrap_err().to_string();
        assert!(err.contains("frames: 36 -> 24"), "{err}");
        assert!(err.contains("capture"), "{err}");
        assert!(w.stage_dir("capture").exists());
    }

    #[test]
    fn an_interrupted_stage_restarts_clean() {
        let (_d, w) = work();
        let cfg = json!({});
        let staging = w.begin("points", &cfg).unwrap();
        std::fs::write(staging.join("half.ply"), "x").unwrap();
        // The process dies here; a rerun begins again.
        assert_eq!(w.state("points", &cfg).unwrap(), StageState::Pending);
        let staging = w.begin("points", &cfg).unwrap();
        assert!(!staging.join("half.ply").exists());
        assert!(!w.stage_dir("points").exists());
    }

    #[test]
    fn discard_removes_the_stage_and_those_after_it() {
        let (_d, w) = work();
        for s in ["capture", "points", "train"] {
            w.begin(s, &json!({})).unwrap();
            w.commit(s, Value::Null).unwrap();
        }
        w.discard("points").unwrap();
        let names: Vec<_> = w.manifest().unwrap().stages.into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["capture"]);
        assert!(w.stage_dir("capture").exists());
        assert!(!w.stage_dir("points").exists() && !w.stage_dir("train").exists());
    }

    #[test]
    fn bad_folders_and_manifests_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = WorkDir::open(&file).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
        let w = WorkDir::open(dir.path().join("w")).unwrap();
        std::fs::write(w.manifest_path(), "{not json").unwrap();
        let err = w.manifest().unwrap_err().to_string();
        assert!(err.contains("manifest.json") && err.contains("corrupt"), "{err}");
        assert!(w.begin("../evil", &Value::Null).is_err());
        assert!(w.commit("never", Value::Null).is_err());
    }
}
