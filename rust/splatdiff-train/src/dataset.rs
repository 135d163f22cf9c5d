//! Training images: posed RGBA pictures from a NeRF-style `transforms.json`,
//! resized to the training resolution.
//!
//! Pixels keep the file's encoding (sRGB values in `0..1`, as 3DGS trains on
//! them) and straight (non-premultiplied) alpha; a frame's mask, when it has
//! one, multiplies the alpha. Resizing is done on premultiplied colour with a
//! triangle (bilinear, widened when shrinking) filter so transparent pixels'
//! colours do not bleed into the object's edges.

use std::path::Path;

use image::imageops::FilterType;
use image::{ImageBuffer, Rgba};
use rayon::prelude::*;
use splatdiff_scene::maps::read_mask_png;
use splatdiff_scene::{read_transforms, Camera, Frame};

use crate::error::{Result, TrainError};

/// One posed training image at the training resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainImage {
    /// The frame's camera, with intrinsics scaled to `width`×`height`.
    pub camera: Camera,
    /// Row-major from the top row: sRGB values in `0..1` and straight alpha.
    pub rgba: Vec<[f32; 4]>,
    pub width: u32,
    pub height: u32,
    /// The frame's name (file stem), for messages.
    pub name: String,
}

impl TrainImage {
    /// Checks the pixel count matches the size and the camera, and values are finite.
    pub fn problem(&self) -> Option<String> {
        let k = self.camera.intrinsics;
        if (k.width, k.height) != (self.width, self.height) {
            return Some(format!(
                "image {} is {}x{} but its camera is {}x{}",
                self.name, self.width, self.height, k.width, k.height
            ));
        }
        if self.rgba.len() != self.width as usize * self.height as usize {
            return Some(format!(
                "image {} has {} pixels, expected {}x{}",
                self.name,
                self.rgba.len(),
                self.width,
                self.height
            ));
        }
        if let Some(p) = k.problem() {
            return Some(format!("image {}: {p}", self.name));
        }
        if !self.camera.cam_to_world.is_finite() {
            return Some(format!("image {}: the camera pose is not finite", self.name));
        }
        if self.rgba.iter().flatten().any(|v| !v.is_finite()) {
            return Some(format!("image {} has non-finite pixel values", self.name));
        }
        None
    }

    /// The image composited over `background`: `rgb·a + (1 − a)·background`.
    pub fn over(&self, background: [f32; 3]) -> Vec<[f32; 3]> {
        self.rgba.iter().map(|p| std::array::from_fn(|c| p[c] * p[3] + (1.0 - p[3]) * background[c])).collect()
    }
}

/// The training size of a `width`×`height` image whose longer side must not
/// exceed `max_side` (the original size when it already fits or when `None`).
pub fn training_size(width: u32, height: u32, max_side: Option<u32>) -> (u32, u32) {
    match max_side {
        Some(max) if width.max(height) > max && max > 0 => {
            let s = max as f64 / width.max(height) as f64;
            (((width as f64 * s).round() as u32).max(1), ((height as f64 * s).round() as u32).max(1))
        }
        _ => (width, height),
    }
}

/// Loads every frame of a `transforms.json` (frames whose image is missing
/// are skipped, as [`read_transforms`] does), resized so the longer side is at
/// most `max_side`. All frames must share one image size; a frame that does
/// not, or whose image does not match its camera, is an error naming it.
pub fn load_dataset(transforms: &Path, max_side: Option<u32>) -> Result<Vec<TrainImage>> {
    if max_side == Some(0) {
        return Err(TrainError::invalid("max_side must be at least 1"));
    }
    let dataset = read_transforms(transforms)?;
    let first = dataset.frames.first().ok_or_else(|| TrainError::file(transforms, "no frames"))?;
    let (w0, h0) = (first.camera.intrinsics.width, first.camera.intrinsics.height);
    if let Some(f) = dataset.frames.iter().find(|f| (f.camera.intrinsics.width, f.camera.intrinsics.height) != (w0, h0))
    {
        let k = f.camera.intrinsics;
        return Err(TrainError::file(
            transforms,
            format!(
                "frame {:?} is {}x{} but frame {:?} is {w0}x{h0}; all frames must share one size",
                f.name, k.width, k.height, first.name
            ),
        ));
    }
    let (w, h) = training_size(w0, h0, max_side);
    dataset.frames.par_iter().map(|f| load_frame(f, w, h)).collect()
}

fn load_frame(frame: &Frame, width: u32, height: u32) -> Result<TrainImage> {
    let path = &frame.image_path;
    let k = frame.camera.intrinsics;
    let mut img =
        image::open(path).map_err(|e| TrainError::file(path, format!("cannot read image: {e}")))?.to_rgba32f();
    if img.dimensions() != (k.width, k.height) {
        return Err(TrainError::file(
            path,
            format!(
                "frame {:?}: image is {}x{} but the dataset's frames are {}x{}",
                frame.name,
                img.width(),
                img.height(),
                k.width,
                k.height
            ),
        ));
    }
    if let Some(mask_path) = &frame.mask_path {
        let (mw, mh, mask) = read_mask_png(mask_path)?;
        if (mw, mh) != (k.width, k.height) {
            return Err(TrainError::file(
                mask_path,
                format!("mask is {mw}x{mh}, its image is {}x{}", k.width, k.height),
            ));
        }
        for (p, m) in img.pixels_mut().zip(mask) {
            p.0[3] *= m as f32 / 255.0;
        }
    }
    for p in img.pixels_mut() {
        for c in 0..3 {
            p.0[c] *= p.0[3]; // premultiply for resizing
        }
    }
    let img: ImageBuffer<Rgba<f32>, Vec<f32>> = if (width, height) != img.dimensions() {
        image::imageops::resize(&img, width, height, FilterType::Triangle)
    } else {
        img
    };
    let rgba = img
        .pixels()
        .map(|p| {
            let a = p.0[3].clamp(0.0, 1.0);
            let un = |c: f32| if a > 1e-6 { (c / a).clamp(0.0, 1.0) } else { 0.0 };
            [un(p.0[0]), un(p.0[1]), un(p.0[2]), a]
        })
        .collect();
    let camera = Camera::new(frame.camera.cam_to_world, k.scaled(width, height));
    let image = TrainImage { camera, rgba, width, height, name: frame.name.clone() };
    if let Some(problem) = image.problem() {
        return Err(TrainError::file(path, problem));
    }
    Ok(image)
}

/// Splits images into (training, held out): every `every`-th image (indices
/// 0, every, 2·every, …) is held out for evaluation, as 3DGS's `llffhold`.
/// `every == 0` holds nothing out.
pub fn split_holdout(images: Vec<TrainImage>, every: usize) -> (Vec<TrainImage>, Vec<TrainImage>) {
    if every == 0 {
        return (images, Vec::new());
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, image) in images.into_iter().enumerate() {
        if i % every == 0 {
            test.push(image)
        } else {
            train.push(image)
        }
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, rgba: [u8; 4]) {
        image::RgbaImage::from_pixel(w, h, Rgba(rgba)).save(path).unwrap();
    }

    fn transforms(dir: &Path, names: &[&str]) -> std::path::PathBuf {
        let frames: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"file_path": format!("./{n}"), "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,4],[0,0,0,1]]}))
            .collect();
        let path = dir.join("transforms.json");
        std::fs::write(
            &path,
            serde_json::to_vec(&serde_json::json!({"camera_angle_x": 0.7, "frames": frames})).unwrap(),
        )
        .unwrap();
        path
    }

    #[test]
    fn loads_and_resizes_with_scaled_cameras() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("a.png"), 40, 20, [255, 0, 0, 255]);
        write_png(&dir.path().join("b.png"), 40, 20, [0, 0, 255, 0]);
        let images = load_dataset(&transforms(dir.path(), &["a", "b"]), Some(10)).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!((images[0].width, images[0].height), (10, 5));
        assert_eq!(images[0].camera.intrinsics.width, 10);
        let fx = 0.5 * 40.0 / (0.35f32).tan() / 4.0;
        assert!((images[0].camera.intrinsics.fx - fx).abs() < 1e-3);
        assert!((images[0].rgba[7][0] - 1.0).abs() < 1e-5 && images[0].rgba[7][3] > 0.999);
        assert_eq!(images[1].rgba[3][3], 0.0);
        assert_eq!(images[1].name, "b");
        let (train, test) = split_holdout(images, 2);
        assert_eq!((train.len(), test.len()), (1, 1));
        assert_eq!(test[0].name, "a");
    }

    #[test]
    fn mixed_sizes_name_the_frame() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("a.png"), 8, 8, [255, 0, 0, 255]);
        write_png(&dir.path().join("odd.png"), 9, 8, [255, 0, 0, 255]);
        let err = load_dataset(&transforms(dir.path(), &["a", "odd"]), None).unwrap_err().to_string();
        assert!(err.contains("odd") && err.contains("9x8"), "{err}");
    }

    #[test]
    fn missing_transforms_or_frames_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = load_dataset(&missing, None).unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");
        let path = transforms(dir.path(), &[]);
        let err = load_dataset(&path, None).unwrap_err().to_string();
        assert!(err.contains("no frames"), "{err}");
        let path = transforms(dir.path(), &["ghost"]);
        let err = load_dataset(&path, None).unwrap_err().to_string();
        assert!(err.contains("ghost"), "{err}");
    }
}
