//! Reading a capture (frames, cameras, passes) and a keyframe folder from
//! disk, and writing propagated frames as a dataset the trainer reads.
//!
//! Keyframes are matched to frames by file stem: a restyled `r_0008.png` in
//! the keyframe folder is keyframe 8 if the capture's frame 8 is `r_0008`.

use std::path::{Path, PathBuf};

use glam::Vec3;
use splatdiff_scene::maps::{read_float_exr, read_mask_png, write_depth_exr};
use splatdiff_scene::transforms::{find_transforms, read_transforms, write_transforms, Dataset};
use splatdiff_scene::FloatMap;

use crate::error::{PropagateError, Result};
use crate::geometry::FrameGeometry;
use crate::image::Image;
use crate::propagate::{FrameInput, Keyframe, PropagatedFrame};

/// A capture read for propagation.
pub struct Capture {
    pub dataset: Dataset,
    pub frames: Vec<FrameInput>,
    /// Problems that did not stop reading (missing passes, NaN depth).
    pub warnings: Vec<String>,
}

/// Reads every frame of a capture: render, depth, normals and mask. A frame
/// without depth is kept (propagation then falls back to patches, with a
/// warning); NaN depth values count as "no object" and are reported.
pub fn read_capture(data: &Path) -> Result<Capture> {
    let dataset = read_transforms(&find_transforms(data, &["transforms.json", "transforms_train.json"])?)?;
    let mut warnings = dataset.warnings.clone();
    let mut frames = Vec::with_capacity(dataset.frames.len());
    for f in &dataset.frames {
        let render = Image::read(&f.image_path)?;
        let (w, h) = (render.width, render.height);
        let intr = f.camera.intrinsics;
        if (intr.width as usize, intr.height as usize) != (w, h) {
            return Err(PropagateError::file(
                &f.image_path,
                format!("image is {w}x{h} but its camera says {}x{}", intr.width, intr.height),
            ));
        }
        let mask = match &f.mask_path {
            Some(p) => {
                let (mw, mh, m) = read_mask_png(p)?;
                check_size(p, mw as usize, mh as usize, w, h)?;
                m.iter().map(|&v| v as f32 / 255.0).collect()
            }
            None if render.channels == 4 => render.data.chunks_exact(4).map(|p| p[3]).collect(),
            None => vec![1.0; w * h],
        };
        let depth = match &f.depth_path {
            Some(p) => {
                let map = read_float_exr(p)?;
                check_size(p, map.width as usize, map.height as usize, w, h)?;
                let nan = map.data.iter().step_by(map.channels as usize).filter(|d| d.is_nan()).count();
                if nan > 0 {
                    warnings.push(format!("{}: {nan} depth values are NaN; treated as no object", p.display()));
                }
                Some(map.data.iter().step_by(map.channels as usize).copied().collect())
            }
            None => {
                warnings.push(format!("frame {}: no depth pass", f.name));
                None
            }
        };
        let normals = match &f.normal_path {
            Some(p) => {
                let map = read_float_exr(p)?;
                check_size(p, map.width as usize, map.height as usize, w, h)?;
                if map.channels < 3 {
                    return Err(PropagateError::file(p, "normal map needs 3 channels"));
                }
                let c = map.channels as usize;
                Some(map.data.chunks_exact(c).map(|n| Vec3::new(n[0], n[1], n[2])).collect())
            }
            None => None,
        };
        frames.push(FrameInput {
            geometry: FrameGeometry { camera: f.camera, width: w, height: h, depth, normals, mask },
            render,
        });
    }
    Ok(Capture { dataset, frames, warnings })
}

fn check_size(path: &Path, w: usize, h: usize, ew: usize, eh: usize) -> Result<()> {
    if (w, h) != (ew, eh) {
        return Err(PropagateError::file(path, format!("is {w}x{h}, its frame's image is {ew}x{eh}")));
    }
    Ok(())
}

/// Reads the keyframes in `keys`: every PNG/JPEG whose stem names a frame
/// of the capture. A file naming no frame, or of another size, is an error.
pub fn read_keyframes(keys: &Path, capture: &Capture) -> Result<Vec<Keyframe>> {
    let entries =
        std::fs::read_dir(keys).map_err(|e| PropagateError::file(keys, format!("cannot list keyframes: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let index = capture.dataset.frames.iter().position(|f| f.name == stem).ok_or_else(|| {
            PropagateError::file(
                &p,
                format!("names no frame of the capture (frames are named like {:?})", capture.dataset.frames[0].name),
            )
        })?;
        let image = Image::read(&p)?;
        let g = &capture.frames[index].geometry;
        if (image.width, image.height) != (g.width, g.height) {
            return Err(PropagateError::file(
                &p,
                format!("keyframe is {}x{}, frame {stem} is {}x{}", image.width, image.height, g.width, g.height),
            ));
        }
        out.push(Keyframe { index, image });
    }
    if out.is_empty() {
        return Err(PropagateError::file(
            keys,
            "holds no keyframe images (PNG or JPEG named like the capture's frames)",
        ));
    }
    Ok(out)
}

/// Writes propagated frames into `out`: `images/NAME.png` (RGBA),
/// `error/NAME.exr` (float uncertainty) and a `transforms.json` with the
/// capture's cameras and passes pointing at the new images, so the trainer
/// reads `out` as it would the capture.
pub fn write_frames(out: &Path, capture: &Capture, frames: &[PropagatedFrame]) -> Result<()> {
    for sub in ["images", "error"] {
        std::fs::create_dir_all(out.join(sub)).map_err(|e| PropagateError::file(out.join(sub), e.to_string()))?;
    }
    let mut dataset = capture.dataset.clone();
    let root = std::path::absolute(out).map_err(|e| PropagateError::file(out, e.to_string()))?;
    for (f, p) in dataset.frames.iter_mut().zip(frames) {
        let image_path = root.join("images").join(format!("{}.png", f.name));
        p.image.write_png(&image_path)?;
        let err =
            FloatMap { width: p.image.width as u32, height: p.image.height as u32, channels: 1, data: p.error.clone() };
        write_depth_exr(&root.join("error").join(format!("{}.exr", f.name)), &err)?;
        f.file_path = format!("images/{}.png", f.name);
        f.image_path = image_path;
    }
    dataset.root = root.clone();
    write_transforms(&root.join("transforms.json"), &dataset)?;
    Ok(())
}
