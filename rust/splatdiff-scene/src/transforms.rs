//! Posed-image datasets in NeRF's `transforms.json` format.
//!
//! Two dialects exist and both are read:
//!
//! * NeRF-synthetic: a global `camera_angle_x` (horizontal field of view),
//!   image size from the images themselves, and `file_path`s without
//!   extension (`"./train/r_0"` means `train/r_0.png`).
//! * instant-ngp: `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h` (and optionally
//!   `camera_angle_y`), each of which a frame may override.
//!
//! `transform_matrix` is the camera-to-world matrix in the Blender/OpenGL
//! camera convention (see [`crate::camera`]), written as four rows. Frames may
//! also name depth, normal and mask images. Relative paths are relative to
//! the folder of the json file. The writer emits the instant-ngp superset,
//! which tools of both dialects read.

use std::cell::OnceCell;
use std::path::{Component, Path, PathBuf};

use glam::Mat4;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::atomic::write_bytes_atomic;
use crate::camera::{Camera, Intrinsics};
use crate::error::{Result, SceneError};

/// One posed image of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// File stem of the image, e.g. `"r_0"`.
    pub name: String,
    /// The `file_path` as written in the json.
    pub file_path: String,
    /// The image file: `file_path` joined to the json's folder, with `.png`
    /// added when the json leaves the extension out.
    pub image_path: PathBuf,
    pub camera: Camera,
    pub depth_path: Option<PathBuf>,
    pub normal_path: Option<PathBuf>,
    pub mask_path: Option<PathBuf>,
}

/// The frames of a `transforms.json` file and what else it holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Folder of the json file, which relative paths start from.
    pub root: PathBuf,
    pub frames: Vec<Frame>,
    /// Problems that did not stop reading, such as frames skipped because
    /// their image is missing.
    pub warnings: Vec<String>,
    /// Top-level keys this module does not interpret (`aabb_scale`,
    /// distortion coefficients, …), written back unchanged.
    pub extra: Map<String, Value>,
}

/// Intrinsics keys, allowed at the top level and in frames.
const INTRINSIC_KEYS: [&str; 8] = ["camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h"];

/// `path` itself when it is a file, else the first of `names` (such as
/// `transforms.json`) found in the folder `path`.
pub fn find_transforms(path: &Path, names: &[&str]) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    names
        .iter()
        .map(|n| path.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| SceneError::invalid(path, format!("no {} there", names.join(" or "))))
}

/// Reads a `transforms.json` file. Frames whose image file is missing are
/// skipped with a warning; it is an error if no frame is left.
pub fn read_transforms(path: &Path) -> Result<Dataset> {
    read(path, true)
}

/// Reads a `transforms.json` file without requiring its images to exist,
/// for a capture in progress whose images are written later. The image
/// size must then be in the file (`w`, `h`) unless an image exists.
pub fn read_transforms_unchecked(path: &Path) -> Result<Dataset> {
    read(path, false)
}

/// A frame's json fields that do not depend on the intrinsics.
struct RawFrame<'a> {
    fields: &'a Map<String, Value>,
    file_path: String,
    image_path: PathBuf,
    image_exists: bool,
    cam_to_world: Mat4,
}

fn read(path: &Path, require_images: bool) -> Result<Dataset> {
    let bad = |message: String| SceneError::invalid(path, message);
    let text = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(bad("the top level is not a JSON object".into()));
    };
    let frames = match top.remove("frames") {
        Some(Value::Array(frames)) if !frames.is_empty() => frames,
        Some(Value::Array(_)) | None => return Err(bad("no frames".into())),
        Some(_) => return Err(bad("'frames' is not a list".into())),
    };
    let globals: Map<String, Value> =
        INTRINSIC_KEYS.iter().filter_map(|&k| top.remove(k).map(|v| (k.to_string(), v))).collect();
    let root = path.parent().map(Path::to_path_buf).unwrap_or_default();

    let raw = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| raw_frame(frame, &root).map_err(|m| bad(format!("frame {i}: {m}"))))
        .collect::<Result<Vec<_>>>()?;

    let image_size = OnceCell::new();
    let first_image_size = || {
        image_size
            .get_or_init(|| match raw.iter().find(|f| f.image_exists) {
                Some(f) => image::image_dimensions(&f.image_path)
                    .map_err(|e| format!("cannot read the image size of {}: {e}", f.image_path.display())),
                None => Err("no image size: the file has no 'w' and 'h' and no image exists to read it from".into()),
            })
            .clone()
    };
    let mut warnings = Vec::new();
    let mut dataset_frames = Vec::new();
    for (i, f) in raw.iter().enumerate() {
        if require_images && !f.image_exists {
            warnings.push(format!("{}: missing image", f.image_path.display()));
            continue;
        }
        let context = |m: String| bad(format!("frame {i} ({:?}): {m}", f.file_path));
        let intrinsics = intrinsics(f.fields, &globals, first_image_size).map_err(context)?;
        let optional_path = |key: &str| match f.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(join(&root, s))),
            Some(_) => Err(context(format!("'{key}' is not a string"))),
        };
        dataset_frames.push(Frame {
            name: f.image_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            file_path: f.file_path.clone(),
            image_path: f.image_path.clone(),
            camera: Camera::new(f.cam_to_world, intrinsics),
            depth_path: optional_path("depth_file_path")?,
            normal_path: optional_path("normal_file_path")?,
            mask_path: optional_path("mask_file_path")?,
        });
    }
    if dataset_frames.is_empty() {
        let first_missing = warnings.first().map_or("", String::as_str);
        return Err(bad(format!("none of the {} frames has its image; first missing: {first_missing}", raw.len())));
    }
    Ok(Dataset { root, frames: dataset_frames, warnings, extra: top })
}

/// The path, image and pose of one frame.
fn raw_frame<'a>(frame: &'a Value, root: &Path) -> Result<RawFrame<'a>, String> {
    let fields = frame.as_object().ok_or("not a JSON object")?;
    let file_path = match fields.get("file_path") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("'file_path' is not a string".into()),
        None => return Err("no 'file_path'".into()),
    };
    let cam_to_world = match fields.get("transform_matrix") {
        Some(m) => matrix(m)?,
        None => return Err("no 'transform_matrix'".into()),
    };
    let as_written = join(root, &file_path);
    let mut with_png = as_written.clone().into_os_string();
    with_png.push(".png");
    let with_png = PathBuf::from(with_png);
    let (image_path, image_exists) = if as_written.is_file() {
        (as_written, true)
    } else if with_png.is_file() {
        (with_png, true)
    } else if as_written.extension().is_some() {
        (as_written, false)
    } else {
        (with_png, false)
    };
    Ok(RawFrame { fields, file_path, image_path, image_exists, cam_to_world })
}

/// A 4×4 matrix written as four rows of four finite numbers.
fn matrix(value: &Value) -> Result<Mat4, String> {
    let not_4x4 = || "'transform_matrix' is not 4 rows of 4 numbers".to_string();
    let rows = value.as_array().filter(|rows| rows.len() == 4).ok_or_else(not_4x4)?;
    let mut m = [[0.0f32; 4]; 4];
    for (out, row) in m.iter_mut().zip(rows) {
        let row = row.as_array().filter(|row| row.len() == 4).ok_or_else(not_4x4)?;
        for (out, v) in out.iter_mut().zip(row) {
            *out = v.as_f64().ok_or_else(not_4x4)? as f32;
            if !out.is_finite() {
                return Err(format!("'transform_matrix' holds the non-finite value {v}"));
            }
        }
    }
    Ok(Mat4::from_cols_array_2d(&m).transpose())
}

/// A frame's intrinsics: each key from the frame if it has it, else from
/// the top level; the image size from `image_size` when neither has it.
fn intrinsics(
    frame: &Map<String, Value>,
    globals: &Map<String, Value>,
    image_size: impl FnOnce() -> Result<(u32, u32), String>,
) -> Result<Intrinsics, String> {
    let number = |fields: &Map<String, Value>, key: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("'{key}' is not a number")),
    };
    let get = |key: &str| Ok::<_, String>(number(frame, key)?.or(number(globals, key)?));
    let (width, height) = match (get("w")?, get("h")?) {
        (Some(w), Some(h)) => (pixels("w", w)?, pixels("h", h)?),
        _ => image_size()?,
    };
    // The frame's own focal information wins over the top level's.
    let focal = |fl: &str, angle: &str, size: u32| -> Result<Option<f64>, String> {
        for fields in [frame, globals] {
            if let Some(f) = number(fields, fl)? {
                return Ok(Some(f));
            }
            if let Some(a) = number(fields, angle)? {
                return Ok(Some(0.5 * f64::from(size) / (0.5 * a).tan()));
            }
        }
        Ok(None)
    };
    let (fx, fy) = match (focal("fl_x", "camera_angle_x", width)?, focal("fl_y", "camera_angle_y", height)?) {
        (Some(fx), Some(fy)) => (fx, fy),
        (Some(f), None) | (None, Some(f)) => (f, f),
        (None, None) => return Err("no focal length: need 'camera_angle_x' or 'fl_x'".into()),
    };
    let k = Intrinsics {
        fx: fx as f32,
        fy: fy as f32,
        cx: get("cx")?.unwrap_or(0.5 * f64::from(width)) as f32,
        cy: get("cy")?.unwrap_or(0.5 * f64::from(height)) as f32,
        width,
        height,
    };
    match k.problem() {
        Some(problem) => Err(format!("invalid intrinsics: {problem}")),
        None => Ok(k),
    }
}

/// An image dimension, which must be a whole number of pixels.
fn pixels(key: &str, v: f64) -> Result<u32, String> {
    if v.fract() == 0.0 && v > 0.0 && v <= f64::from(u32::MAX) {
        Ok(v as u32)
    } else {
        Err(format!("'{key}' = {v} is not a positive whole number of pixels"))
    }
}

/// `relative` joined to `root`, without `.` components (`./train/r_0`).
fn join(root: &Path, relative: &str) -> PathBuf {
    root.join(Path::new(relative).components().filter(|c| *c != Component::CurDir).collect::<PathBuf>())
}

/// Writes `dataset` as an instant-ngp style `transforms.json`, atomically.
/// The top-level intrinsics are the first frame's (with `camera_angle_x/y`
/// for NeRF-synthetic readers); a frame carries its own only where they
/// differ. Paths are written relative to the json's folder when inside it.
pub fn write_transforms(path: &Path, dataset: &Dataset) -> Result<()> {
    let bad = |message: String| SceneError::invalid(path, message);
    let first = dataset.frames.first().ok_or_else(|| bad("no frames to write".into()))?.camera.intrinsics;
    if let Some(key) = dataset.extra.keys().find(|k| *k == "frames" || INTRINSIC_KEYS.contains(&k.as_str())) {
        return Err(bad(format!("extra key '{key}' clashes with a key the writer sets")));
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let frames = dataset
        .frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let (m, k) = (frame.camera.cam_to_world, frame.camera.intrinsics);
            if let Some(problem) = k.problem() {
                return Err(bad(format!("frame {i} ({}): invalid intrinsics: {problem}", frame.name)));
            }
            if !m.is_finite() {
                return Err(bad(format!("frame {i} ({}): transform matrix is not finite", frame.name)));
            }
            let differs = |v: f32, first: f32| (v != first).then_some(v);
            Ok(FrameOut {
                file_path: relative_to(dir, &frame.image_path),
                transform_matrix: m.transpose().to_cols_array_2d(),
                fl_x: differs(k.fx, first.fx),
                fl_y: differs(k.fy, first.fy),
                cx: differs(k.cx, first.cx),
                cy: differs(k.cy, first.cy),
                w: (k.width != first.width).then_some(k.width),
                h: (k.height != first.height).then_some(k.height),
                depth_file_path: frame.depth_path.as_deref().map(|p| relative_to(dir, p)),
                normal_file_path: frame.normal_path.as_deref().map(|p| relative_to(dir, p)),
                mask_file_path: frame.mask_path.as_deref().map(|p| relative_to(dir, p)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let file = FileOut {
        camera_angle_x: first.fov_x(),
        camera_angle_y: first.fov_y(),
        fl_x: first.fx,
        fl_y: first.fy,
        cx: first.cx,
        cy: first.cy,
        w: first.width,
        h: first.height,
        frames,
        extra: &dataset.extra,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| bad(format!("cannot encode JSON: {e}")))?;
    write_bytes_atomic(path, &json)
}

#[derive(Serialize)]
struct FileOut<'a> {
    camera_angle_x: f32,
    camera_angle_y: f32,
    fl_x: f32,
    fl_y: f32,
    cx: f32,
    cy: f32,
    w: u32,
    h: u32,
    frames: Vec<FrameOut>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct FrameOut {
    file_path: String,
    transform_matrix: [[f32; 4]; 4],
    #[serde(skip_serializing_if = "Option::is_none")]
    fl_x: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fl_y: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cx: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cy: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    h: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depth_file_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    normal_file_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mask_file_path: Option<String>,
}

/// `path` relative to `dir` with forward slashes when it lies inside `dir`,
/// else absolute.
fn relative_to(dir: &Path, path: &Path) -> String {
    let absolute = |p: &Path| {
        let p = if p.as_os_str().is_empty() { Path::new(".") } else { p };
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    };
    let path = absolute(path);
    let shown = path.strip_prefix(absolute(dir)).unwrap_or(&path);
    shown.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/")
}
