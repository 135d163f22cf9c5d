//! ControlNet conditioning images ("detect maps") made from what Blender
//! renders, with no neural preprocessor: depth and normals straight from the
//! render passes, and canny / lineart edges from the colour render.
//!
//! Every function returns an 8-bit RGB image in the form the SD 1.5
//! ControlNets of lllyasviel's ControlNet 1.1 were trained on, which the
//! pipeline scales to [0, 1] like diffusers' control-image processor:
//!
//! * **depth** (`control_v11f1p_sd15_depth`): normalised *inverse* depth,
//!   like a MiDaS estimate: near = white, far = dark, nothing hit = black.
//! * **normal** (`control_v11p_sd15_normalbae`): camera-space unit normals
//!   encoded as `rgb = (n + 1) / 2`, with the axes of the ScanNet protocol
//!   the model card asks for as ControlNet's preprocessors output it:
//!   **red = towards image left, green = towards image up, blue = towards
//!   the camera**. A surface facing the camera is (128, 128, 255); pixels
//!   where nothing was hit get that same neutral colour.
//! * **canny** (`control_v11p_sd15_canny`): white one-pixel edges on black.
//! * **lineart** (`control_v11p_sd15_lineart`): white strokes on black, from
//!   a difference of Gaussians rather than the annotator network.

use std::path::Path;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use splatdiff_scene::maps::{read_float_exr, FloatMap};
use splatdiff_scene::Camera;

use crate::error::{DiffusionError, Result};

/// Brightness of the farthest surface in a depth control image: background
/// (nothing hit, depth 0) is black, so geometry never reaches 0 and stays
/// distinguishable from it.
pub const DEPTH_FAR_LEVEL: f32 = 0.1;

/// The kind of a control image, which decides how it is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Inverse depth from the depth pass.
    Depth,
    /// Camera-space normals from the normal pass.
    Normal,
    /// Canny edges of the colour render.
    Canny,
    /// Difference-of-Gaussians line art of the colour render.
    Lineart,
}

impl ControlKind {
    /// All kinds, in the order the CLI lists them.
    pub const ALL: [ControlKind; 4] = [Self::Depth, Self::Normal, Self::Canny, Self::Lineart];

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Depth => "depth",
            Self::Normal => "normal",
            Self::Canny => "canny",
            Self::Lineart => "lineart",
        }
    }

    /// Whether this control needs the render passes (depth, normals) rather
    /// than only the colour image.
    pub fn needs_passes(self) -> bool {
        matches!(self, Self::Depth | Self::Normal)
    }
}

impl std::fmt::Display for ControlKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ControlKind {
    type Err = DiffusionError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
            DiffusionError::Invalid(format!("unknown control kind {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

/// Depth control image from a depth map in metres along the view axis
/// (0 or non-finite = nothing hit): inverse depth, scaled so the nearest
/// surface is white (255) and the farthest [`DEPTH_FAR_LEVEL`]; background
/// black. A map where every hit pixel has one depth comes out white there.
pub fn depth_control(depth: &FloatMap) -> Result<RgbImage> {
    check_map(depth, &[1], "depth")?;
    let inv: Vec<Option<f32>> = depth.data.iter().map(|&d| (d.is_finite() && d > 0.0).then(|| 1.0 / d)).collect();
    let (lo, hi) = inv.iter().flatten().fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = hi - lo;
    let levels = inv.iter().map(|v| match v {
        None => 0.0,
        Some(_) if span <= f32::EPSILON * hi => 1.0,
        Some(v) => DEPTH_FAR_LEVEL + (1.0 - DEPTH_FAR_LEVEL) * (v - lo) / span,
    });
    Ok(grey_image(depth.width, depth.height, levels))
}

/// Reads a depth EXR (as Blender's depth pass is saved) and makes its
/// control image.
pub fn read_depth_control(path: &Path) -> Result<RgbImage> {
    let map = read_float_exr(path).map_err(|e| DiffusionError::format(path, e.to_string()))?;
    depth_control(&map).map_err(|e| with_path(e, path))
}

/// Normal control image from world-space normals (3 or 4 channels; zero
/// vectors or non-finite values = nothing hit) seen by `camera`: rotated into
/// camera space and encoded in the convention documented at the top of this
/// module.
pub fn normal_control(normals: &FloatMap, camera: &Camera) -> Result<RgbImage> {
    check_map(normals, &[3, 4], "normal")?;
    let world_to_camera = camera.world_to_camera();
    let c = normals.channels as usize;
    let mut img = RgbImage::new(normals.width, normals.height);
    for (px, n) in img.pixels_mut().zip(normals.data.chunks_exact(c)) {
        let world = glam::Vec3::new(n[0], n[1], n[2]);
        let cam = world_to_camera.transform_vector3(world);
        // Blender camera space: +x right, +y up, +z towards the viewer.
        let encoded = if cam.is_finite() && cam.length_squared() > 1e-12 {
            let cam = cam.normalize();
            [-cam.x, cam.y, cam.z]
        } else {
            [0.0, 0.0, 1.0]
        };
        *px = Rgb(encoded.map(|v| to_u8((v + 1.0) * 0.5)));
    }
    Ok(img)
}

/// Reads a world-space normal EXR and makes its control image for `camera`.
pub fn read_normal_control(path: &Path, camera: &Camera) -> Result<RgbImage> {
    let map = read_float_exr(path).map_err(|e| DiffusionError::format(path, e.to_string()))?;
    normal_control(&map, camera).map_err(|e| with_path(e, path))
}

/// Settings of the canny edge detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CannyParams {
    /// Gradient magnitude (Sobel on 0..255 luminance) below which no edge
    /// starts or continues.
    pub low: f32,
    /// Gradient magnitude above which a pixel is certainly an edge.
    pub high: f32,
    /// Standard deviation in pixels of the Gaussian blur before the Sobel
    /// filter (0 = none, as OpenCV's `Canny`).
    pub sigma: f32,
}

impl Default for CannyParams {
    /// The thresholds of ControlNet's canny annotator (100, 200) after a light blur.
    fn default() -> Self {
        Self { low: 100.0, high: 200.0, sigma: 0.8 }
    }
}

/// Canny edges of `image`: Gaussian blur, Sobel gradients, non-maximum
/// suppression along the gradient direction, and hysteresis between the
/// thresholds. Edges are white (255) on black.
pub fn canny_control(image: &RgbImage, params: &CannyParams) -> Result<RgbImage> {
    if !(params.low >= 0.0 && params.high >= params.low && params.sigma >= 0.0) {
        return Err(DiffusionError::Invalid(format!(
            "canny thresholds must satisfy 0 <= low <= high and sigma >= 0, got low {}, high {}, sigma {}",
            params.low, params.high, params.sigma
        )));
    }
    let (w, h) = (image.width() as usize, image.height() as usize);
    let grey = gaussian_blur(&luminance(image, 255.0), w, h, params.sigma);
    let (gx, gy) = sobel(&grey, w, h);
    let mag: Vec<f32> = gx.iter().zip(&gy).map(|(x, y)| (x * x + y * y).sqrt()).collect();

    // Non-maximum suppression: keep a pixel that is a local maximum across
    // the edge (strictly above one neighbour, at least the other, so a
    // two-pixel plateau gives one line).
    let mut thin = vec![0f32; w * h];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            let m = mag[i];
            if m < params.low || m == 0.0 {
                continue;
            }
            let (a, b) = match gradient_sector(gx[i], gy[i]) {
                0 => (i - 1, i + 1),         // horizontal gradient: compare left/right
                1 => (i - w - 1, i + w + 1), // down-right diagonal
                2 => (i - w, i + w),         // vertical gradient: compare up/down
                _ => (i - w + 1, i + w - 1), // down-left diagonal
            };
            if m > mag[a] && m >= mag[b] {
                thin[i] = m;
            }
        }
    }

    let edge = hysteresis(&thin, w, h, params.low, params.high);
    Ok(grey_image(image.width(), image.height(), edge.iter().map(|&e| if e { 1.0 } else { 0.0 })))
}

/// Canny's hysteresis: pixels of `thin` (the suppressed magnitudes) at or
/// above `high` are edges, and so is every pixel at or above `low` that is
/// 8-connected to an edge.
fn hysteresis(thin: &[f32], w: usize, h: usize, low: f32, high: f32) -> Vec<bool> {
    let mut edge = vec![false; w * h];
    let mut stack: Vec<usize> = (0..w * h).filter(|&i| thin[i] >= high).collect();
    for &i in &stack {
        edge[i] = true;
    }
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for dy in -1..=1isize {
            for dx in -1..=1isize {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if !edge[j] && thin[j] >= low {
                    edge[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    edge
}

/// Settings of the line-art filter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LineartParams {
    /// Scale in pixels of the lines picked up (the inner Gaussian's sigma;
    /// the surround is 1.6 times wider).
    pub sigma: f32,
    /// Darkening (in 0..1 luminance) relative to the surroundings that makes a
    /// full-strength line; weaker darkening gives proportionally grey lines.
    pub strength: f32,
}

impl Default for LineartParams {
    fn default() -> Self {
        Self { sigma: 1.0, strength: 0.08 }
    }
}

/// Line art of `image`: where a pixel is darker than its surroundings (a
/// difference of Gaussians, as in XDoG), a white stroke whose brightness
/// grows with the darkening, on black. Dark lines and the dark side of
/// edges become strokes; flat areas stay black.
pub fn lineart_control(image: &RgbImage, params: &LineartParams) -> Result<RgbImage> {
    if !(params.sigma > 0.0 && params.strength > 0.0) {
        return Err(DiffusionError::Invalid(format!(
            "lineart sigma and strength must be positive, got {} and {}",
            params.sigma, params.strength
        )));
    }
    let (w, h) = (image.width() as usize, image.height() as usize);
    let grey = luminance(image, 1.0);
    let inner = gaussian_blur(&grey, w, h, params.sigma);
    let outer = gaussian_blur(&grey, w, h, 1.6 * params.sigma);
    let levels = inner.iter().zip(&outer).map(|(i, o)| ((o - i) / params.strength).clamp(0.0, 1.0));
    Ok(grey_image(image.width(), image.height(), levels))
}

/// Which of four directions (0 = horizontal, 1 = the x = y diagonal,
/// 2 = vertical, 3 = the other diagonal) the gradient points closest to.
fn gradient_sector(gx: f32, gy: f32) -> u8 {
    let angle = gy.atan2(gx).to_degrees().rem_euclid(180.0);
    match angle {
        a if !(22.5..157.5).contains(&a) => 0,
        a if a < 67.5 => 1,
        a if a < 112.5 => 2,
        _ => 3,
    }
}

/// Rec. 601 luma of each pixel, scaled so white is `white`.
fn luminance(image: &RgbImage, white: f32) -> Vec<f32> {
    image.pixels().map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * white / 255.0).collect()
}

/// 3x3 Sobel derivatives (x right, y down) with replicated borders.
fn sobel(img: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let at = |x: isize, y: isize| img[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize];
    let mut gx = vec![0f32; w * h];
    let mut gy = vec![0f32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            gx[i] = (at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2.0 * at(x - 1, y) + at(x - 1, y + 1));
            gy[i] = (at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2.0 * at(x, y - 1) + at(x + 1, y - 1));
        }
    }
    (gx, gy)
}

/// Separable Gaussian blur with replicated borders; sigma 0 copies.
fn gaussian_blur(img: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return img.to_vec();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, &kv)| {
                        let o = k as isize - radius;
                        let (sx, sy) = if horizontal {
                            ((x as isize + o).clamp(0, w as isize - 1) as usize, y)
                        } else {
                            (x, (y as isize + o).clamp(0, h as isize - 1) as usize)
                        };
                        kv * src[sy * w + sx]
                    })
                    .sum();
            }
        }
        out
    };
    pass(&pass(img, true), false)
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A grey RGB image from levels in [0, 1], row-major.
fn grey_image(w: u32, h: u32, levels: impl Iterator<Item = f32>) -> RgbImage {
    let mut img = RgbImage::new(w, h);
    for (px, v) in img.pixels_mut().zip(levels) {
        let g = to_u8(v);
        *px = Rgb([g, g, g]);
    }
    img
}

/// Checks a float map's channel count and size.
fn check_map(map: &FloatMap, channels: &[u32], what: &str) -> Result<()> {
    if !channels.contains(&map.channels) {
        return Err(DiffusionError::Invalid(format!(
            "{what} map has {} channels, expected {}",
            map.channels,
            channels.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" or ")
        )));
    }
    let expected = map.width as usize * map.height as usize * map.channels as usize;
    if map.width == 0 || map.height == 0 || map.data.len() != expected {
        return Err(DiffusionError::Invalid(format!(
            "{what} map of {}x{} pixels holds {} values, expected {expected}",
            map.width,
            map.height,
            map.data.len()
        )));
    }
    Ok(())
}

/// Turns an `Invalid` error about a map into a `Format` error naming its file.
fn with_path(e: DiffusionError, path: &Path) -> DiffusionError {
    match e {
        DiffusionError::Invalid(message) => DiffusionError::format(path, message),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use glam::{Mat4, Vec3};
    use splatdiff_scene::Intrinsics;

    use super::*;

    fn grey_at(img: &RgbImage, x: u32, y: u32) -> u8 {
        img.get_pixel(x, y)[0]
    }

    #[test]
    fn depth_ordering_becomes_brightness_ordering() {
        // Background, 2 m, 4 m, 1 m.
        let map = FloatMap { width: 4, height: 1, channels: 1, data: vec![0.0, 2.0, 4.0, 1.0] };
        let img = depth_control(&map).unwrap();
        let v: Vec<u8> = (0..4).map(|x| grey_at(&img, x, 0)).collect();
        assert_eq!(v[0], 0, "background is black");
        assert_eq!(v[3], 255, "nearest is white");
        assert_eq!(v[2], to_u8(DEPTH_FAR_LEVEL), "farthest is the far level");
        // Inverse depth: 1/2 lies 1/3 of the way from 1/4 to 1/1.
        let expected = DEPTH_FAR_LEVEL + (1.0 - DEPTH_FAR_LEVEL) * (0.5 - 0.25) / 0.75;
        assert_eq!(v[1], to_u8(expected));
        assert!(v[3] > v[1] && v[1] > v[2] && v[2] > v[0]);
    }

    #[test]
    fn depth_rejects_wrong_channel_count() {
        let map = FloatMap { width: 1, height: 1, channels: 3, data: vec![1.0; 3] };
        let err = depth_control(&map).unwrap_err().to_string();
        assert!(err.contains("3 channels"), "{err}");
    }

    #[test]
    fn flat_depth_is_white() {
        let map = FloatMap { width: 2, height: 1, channels: 1, data: vec![3.0, 3.0] };
        let img = depth_control(&map).unwrap();
        assert_eq!(grey_at(&img, 0, 0), 255);
    }

    #[test]
    fn normals_are_rotated_into_camera_space() {
        let intr = Intrinsics { fx: 10.0, fy: 10.0, cx: 1.0, cy: 1.0, width: 2, height: 2 };
        // Camera on +Y looking at the origin: camera right = world +X... (look_at
        // gives right = forward x Z = (0,-1,0) x (0,0,1) = (-1, 0, 0)).
        let cam = Camera::look_at(Vec3::new(0.0, 5.0, 0.0), Vec3::ZERO, intr);
        let towards_camera = [0.0, 1.0, 0.0];
        let world_up = [0.0, 0.0, 1.0];
        let world_x = [1.0, 0.0, 0.0]; // = camera left
        let data: Vec<f32> = [towards_camera, world_up, world_x, [0.0; 3]].concat();
        let map = FloatMap { width: 2, height: 2, channels: 3, data };
        let img = normal_control(&map, &cam).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [128, 128, 255], "facing the camera");
        assert_eq!(img.get_pixel(1, 0).0, [128, 255, 128], "pointing up");
        assert_eq!(img.get_pixel(0, 1).0, [255, 128, 128], "pointing to image left");
        assert_eq!(img.get_pixel(1, 1).0, [128, 128, 255], "nothing hit: neutral");
        // Identity camera: world axes are camera axes.
        let id = Camera::new(Mat4::IDENTITY, intr);
        let map = FloatMap { width: 1, height: 1, channels: 4, data: vec![0.0, 0.0, 2.0, 1.0] };
        assert_eq!(normal_control(&map, &id).unwrap().get_pixel(0, 0).0, [128, 128, 255]);
    }

    fn step_image(w: u32, h: u32, edge_col: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, _| if x < edge_col { Rgb([20, 20, 20]) } else { Rgb([230, 230, 230]) })
    }

    #[test]
    fn canny_finds_a_step_edge_at_its_column() {
        let img = step_image(16, 12, 8);
        let edges = canny_control(&img, &CannyParams::default()).unwrap();
        // The step lies between columns 7 and 8: one thin line on one of
        // them (the blurred gradient is symmetric up to rounding), straight.
        let first: Vec<u32> = (0..16).filter(|&x| grey_at(&edges, x, 1) == 255).collect();
        assert!(first == vec![7] || first == vec![8], "edge pixels at {first:?}");
        for y in 1..11 {
            let cols: Vec<u32> = (0..16).filter(|&x| grey_at(&edges, x, y) == 255).collect();
            assert_eq!(cols, first, "row {y}");
        }
        // A flat image has no edges.
        let flat = RgbImage::from_pixel(8, 8, Rgb([90, 90, 90]));
        let none = canny_control(&flat, &CannyParams::default()).unwrap();
        assert!(none.pixels().all(|p| p[0] == 0));
    }

    #[test]
    fn hysteresis_keeps_weak_pixels_connected_to_strong_ones_only() {
        // 6x3 magnitudes: a strong pixel (9) with a diagonal chain of weak
        // ones (5) on the left, an isolated weak pair on the right.
        #[rustfmt::skip]
        let thin = [
            9.0, 0.0, 0.0, 0.0, 5.0, 0.0,
            0.0, 5.0, 0.0, 0.0, 5.0, 0.0,
            0.0, 0.0, 5.0, 0.0, 0.0, 2.0,
        ];
        let edge = hysteresis(&thin, 6, 3, 4.0, 8.0);
        let on: Vec<usize> = (0..18).filter(|&i| edge[i]).collect();
        assert_eq!(on, vec![0, 7, 14]);
    }

    #[test]
    fn lineart_draws_a_dark_line_where_it_is() {
        let img = RgbImage::from_fn(21, 9, |x, _| if x == 10 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        let art = lineart_control(&img, &LineartParams::default()).unwrap();
        for y in 0..9 {
            let row: Vec<u8> = (0..21).map(|x| grey_at(&art, x, y)).collect();
            let max = *row.iter().max().unwrap();
            assert_eq!(max, 255, "row {y}: {row:?}");
            assert_eq!(row.iter().position(|&v| v == max), Some(10), "row {y}: {row:?}");
            assert_eq!(row[0], 0);
            assert_eq!(row[20], 0);
        }
        // A flat image has no lines.
        let flat = RgbImage::from_pixel(8, 8, Rgb([128, 128, 128]));
        assert!(lineart_control(&flat, &LineartParams::default()).unwrap().pixels().all(|p| p[0] == 0));
    }

    #[test]
    fn control_kind_names_round_trip() {
        for k in ControlKind::ALL {
            assert_eq!(k.name().parse::<ControlKind>().unwrap(), k);
        }
        assert!("midas".parse::<ControlKind>().is_err());
    }
}
