//! External edits: the run pauses with the keyframes written to a folder;
//! the user restyles them in any 2D tool (painting, face swap, another
//! diffusion UI), saves them under the same names and size, and resumes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{KeyInput, StylizeContext, Stylized, Stylizer};
use crate::error::{PipelineError, Result};

/// Settings of the external stylizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalConfig {
    /// Not used by the edit itself; recorded so iterations read alike.
    pub strength: f64,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self { strength: 1.0 }
    }
}

pub struct ExternalStylizer;

const README: &str = "splatdiff: restyle these keyframes in any 2D tool.\n\
Keep each file's name and size (PNG or JPEG; the object's alpha may be dropped,\n\
the capture's mask is applied again). Then press Resume in Blender's\n\
Splat Diffusion panel, or run the pipeline again with --resume.\n";

/// The edited file of `name` in `folder`, whichever image extension it has.
fn find_edit(folder: &Path, name: &str) -> Option<PathBuf> {
    ["png", "PNG", "jpg", "jpeg", "JPG", "JPEG"]
        .iter()
        .map(|x| folder.join(format!("{name}.{x}")))
        .find(|p| p.is_file())
}

impl Stylizer for ExternalStylizer {
    fn stylize(&self, keys: &[KeyInput], ctx: &StylizeContext) -> Result<Stylized> {
        let folder = &ctx.edit_dir;
        if !ctx.resume {
            if !folder.is_dir() {
                // Written to a hidden sibling first: a half-written edit folder never appears.
                let tmp =
                    folder.with_file_name(format!(".{}.tmp", folder.file_name().unwrap_or_default().to_string_lossy()));
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| PipelineError::io(&tmp, e))?;
                for key in keys {
                    key.image.write_png(&tmp.join(format!("{}.png", key.name)))?;
                }
                std::fs::write(tmp.join("README.txt"), README).map_err(|e| PipelineError::io(&tmp, e))?;
                std::fs::rename(&tmp, folder).map_err(|e| PipelineError::io(folder, e))?;
            }
            return Ok(Stylized::Paused {
                folder: folder.clone(),
                message: format!(
                    "waiting for external edits: restyle the {} keyframes in {} (same names and sizes), then resume",
                    keys.len(),
                    folder.display()
                ),
            });
        }
        if !folder.is_dir() {
            return Err(PipelineError::invalid(
                folder,
                "the edit folder is missing: run without resume to write the keyframes again",
            ));
        }
        let missing: Vec<&str> = keys.iter().filter(|k| find_edit(folder, k.name).is_none()).map(|k| k.name).collect();
        if !missing.is_empty() {
            return Err(PipelineError::invalid(
                folder,
                format!("edited keyframes missing: {} (expected PNG or JPEG files of those names)", missing.join(", ")),
            ));
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let path = find_edit(folder, key.name).expect("checked above");
            out.push(key.read_restyled(&path, "the edited keyframe")?);
        }
        Ok(Stylized::Images(out))
    }
}
