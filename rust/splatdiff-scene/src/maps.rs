//! Per-pixel maps that go with a dataset's images: depth and normals as
//! 32-bit float OpenEXR (the format Blender writes such passes in, and one
//! that keeps metres and unit vectors exact), masks as 8-bit grey PNG.

use std::io::Cursor;
use std::path::Path;

use exr::prelude::traits::{read, ReadChannels as _, ReadLayers as _, WritableImage as _};
use exr::prelude::{AnyChannel, AnyChannels, Encoding, FlatSamples, Image, Layer, LayerAttributes};
use image::ImageEncoder as _;

use crate::atomic::write_bytes_atomic;
use crate::error::{Result, SceneError};

/// A float image: `channels` values per pixel, interleaved, rows from top
/// to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatMap {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: Vec<f32>,
}

/// Writes a one-channel depth map (channel `Y`) as float32 EXR, atomically.
pub fn write_depth_exr(path: &Path, map: &FloatMap) -> Result<()> {
    write_exr(path, map, &["Y"])
}

/// Writes a three-channel normal map (channels `R`, `G`, `B`) as float32
/// EXR, atomically.
pub fn write_normal_exr(path: &Path, map: &FloatMap) -> Result<()> {
    write_exr(path, map, &["R", "G", "B"])
}

fn write_exr(path: &Path, map: &FloatMap, names: &[&str]) -> Result<()> {
    let bad = |message: String| SceneError::invalid(path, message);
    if map.channels as usize != names.len() {
        return Err(bad(format!("map has {} channels, this file needs {}", map.channels, names.len())));
    }
    let pixels = map.width as usize * map.height as usize;
    if pixels == 0 || map.data.len() != pixels * names.len() {
        return Err(bad(format!(
            "map of {}x{} pixels with {} channels holds {} values",
            map.width,
            map.height,
            map.channels,
            map.data.len()
        )));
    }
    let channels = names
        .iter()
        .enumerate()
        .map(|(c, &name)| {
            let samples = map.data.iter().skip(c).step_by(names.len()).copied().collect();
            AnyChannel::new(name, FlatSamples::F32(samples))
        })
        .collect::<Vec<_>>();
    let size = (map.width as usize, map.height as usize);
    // ZIP-compressed scan lines: lossless, and read by every EXR reader.
    let layer =
        Layer::new(size, LayerAttributes::default(), Encoding::SMALL_LOSSLESS, AnyChannels::sort(channels.into()));
    let mut bytes = Vec::new();
    Image::from_layer(layer)
        .write()
        .to_buffered(Cursor::new(&mut bytes))
        .map_err(|e| bad(format!("cannot encode EXR: {e}")))?;
    write_bytes_atomic(path, &bytes)
}

/// Reads the first layer of an EXR file as floats. A single channel, of
/// any name (`Y`, `Z`, `R`, `V`, …), gives a one-channel map; otherwise the
/// layer must have `R`, `G`, `B` (and maybe `A`), returned in that order.
pub fn read_float_exr(path: &Path) -> Result<FloatMap> {
    let bad = |message: String| SceneError::invalid(path, message);
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    let image = read()
        .no_deep_data()
        .largest_resolution_level()
        .all_channels()
        .first_valid_layer()
        .all_attributes()
        .from_buffered(Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable OpenEXR file: {e}")))?;
    let layer = &image.layer_data;
    let list = &layer.channel_data.list;
    // Channel names may carry a layer prefix ("ViewLayer.Normal.R").
    let find = |name: &str| list.iter().find(|c| c.name.to_string().rsplit('.').next() == Some(name));
    let chosen: Vec<_> = if list.len() == 1 {
        list.iter().collect()
    } else {
        let rgb: Option<Vec<_>> = ["R", "G", "B"].into_iter().map(find).collect();
        let names: Vec<String> = list.iter().map(|c| c.name.to_string()).collect();
        let mut rgb =
            rgb.ok_or_else(|| bad(format!("channels {}: expected one channel, or R, G, B (and A)", names.join(", "))))?;
        rgb.extend(find("A"));
        rgb
    };
    let (width, height) = (layer.size.width(), layer.size.height());
    let pixels = width * height;
    if let Some(c) = chosen.iter().find(|c| c.sample_data.len() != pixels) {
        return Err(bad(format!("channel {} is subsampled, which is not supported", c.name)));
    }
    let samples: Vec<Vec<f32>> = chosen.iter().map(|c| c.sample_data.values_as_f32().collect()).collect();
    let data = (0..pixels).flat_map(|i| samples.iter().map(move |s| s[i])).collect();
    Ok(FloatMap { width: width as u32, height: height as u32, channels: chosen.len() as u32, data })
}

/// Writes an 8-bit grey PNG mask of `width × height` pixels, atomically.
pub fn write_mask_png(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    write_png(path, width, height, pixels, image::ExtendedColorType::L8, "mask")
}

/// Writes straight-alpha RGBA values in 0..1 (display-referred, as the
/// capture's colour images) as an 8-bit RGBA PNG, atomically.
pub fn write_rgba_png(path: &Path, width: u32, height: u32, pixels: &[[f32; 4]]) -> Result<()> {
    let bytes: Vec<u8> = pixels.as_flattened().iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    write_png(path, width, height, &bytes, image::ExtendedColorType::Rgba8, "image")
}

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    bytes: &[u8],
    kind: image::ExtendedColorType,
    what: &str,
) -> Result<()> {
    let channels = kind.channel_count() as usize;
    if width == 0 || height == 0 || bytes.len() != width as usize * height as usize * channels {
        let message = format!("{what} of {width}x{height} pixels given {} values", bytes.len() / channels.max(1));
        return Err(SceneError::invalid(path, message));
    }
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(bytes, width, height, kind)
        .map_err(|e| SceneError::invalid(path, format!("cannot encode a {width}x{height} {what}: {e}")))?;
    write_bytes_atomic(path, &encoded)
}

/// Reads any PNG as an 8-bit grey mask: `(width, height, pixels)`.
pub fn read_mask_png(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    let mask = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map_err(|e| SceneError::invalid(path, format!("not a readable PNG: {e}")))?
        .into_luma8();
    Ok((mask.width(), mask.height(), mask.into_raw()))
}
