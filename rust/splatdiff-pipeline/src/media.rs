//! Pictures of a run for people: contact sheets and turntable GIFs.

use std::path::Path;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbaImage};
use splatdiff_propagate::image::Image;
use splatdiff_scene::atomic::write_atomic;

use crate::error::{PipelineError, Result};

/// Grey under transparent pixels in sheets and GIFs.
const BACKGROUND: [f32; 3] = [0.18, 0.18, 0.18];

/// `image` scaled to fit `side`×`side` (aspect kept), composited over the
/// background, as RGB.
fn thumbnail(image: &Image, side: usize) -> Image {
    let scale = side as f32 / image.width.max(image.height) as f32;
    let (w, h) = (
        ((image.width as f32 * scale).round() as usize).max(1),
        ((image.height as f32 * scale).round() as usize).max(1),
    );
    let mut small = image.clone();
    while small.width >= 2 * w && small.height >= 2 * h {
        small = small.downsample();
    }
    let small = small.resize_bilinear(w, h);
    let mut out = Image::new(w, h, 3);
    for (i, px) in out.data.chunks_exact_mut(3).enumerate() {
        let a = if small.channels == 4 { small.data[i * 4 + 3] } else { 1.0 };
        let rgb = small.rgb(i);
        for c in 0..3 {
            px[c] = rgb[c] * a + BACKGROUND[c] * (1.0 - a);
        }
    }
    out
}

/// The images in a grid of `cols` columns, each fitted into `side` pixels,
/// with a 2-pixel gutter.
pub fn contact_sheet(cells: &[&Image], cols: usize, side: usize) -> Result<Image> {
    if cells.is_empty() || cols == 0 {
        return Err(PipelineError::Internal("empty contact sheet".into()));
    }
    let gap = 2;
    let rows = cells.len().div_ceil(cols);
    let cols = cols.min(cells.len());
    let (w, h) = (cols * (side + gap) + gap, rows * (side + gap) + gap);
    let mut sheet = Image::new(w, h, 3);
    sheet.data.fill(0.08);
    for (n, cell) in cells.iter().enumerate() {
        let thumb = thumbnail(cell, side);
        let (x0, y0) = (gap + (n % cols) * (side + gap), gap + (n / cols) * (side + gap));
        let (ox, oy) = ((side - thumb.width) / 2, (side - thumb.height) / 2);
        for y in 0..thumb.height {
            for x in 0..thumb.width {
                sheet.pixel_mut(x0 + ox + x, y0 + oy + y).copy_from_slice(thumb.pixel(x, y));
            }
        }
    }
    Ok(sheet)
}

/// Writes `frames` as a looping GIF, each fitted into `side` pixels, at
/// `fps` frames per second, atomically.
pub fn write_turntable_gif(path: &Path, frames: &[Image], side: usize, fps: u32) -> Result<()> {
    let delay = Delay::from_numer_denom_ms(1000, fps.max(1));
    let gif_frames: Vec<Frame> = frames
        .iter()
        .map(|f| {
            let t = thumbnail(f, side);
            let bytes: Vec<u8> =
                t.data.chunks_exact(3).flat_map(|p| [to_u8(p[0]), to_u8(p[1]), to_u8(p[2]), 255]).collect();
            Frame::from_parts(RgbaImage::from_raw(t.width as u32, t.height as u32, bytes).expect("sized"), 0, 0, delay)
        })
        .collect();
    write_atomic(path, |file| {
        let mut encoder = GifEncoder::new_with_speed(file, 10);
        encoder.set_repeat(Repeat::Infinite).map_err(std::io::Error::other)?;
        encoder.encode_frames(gif_frames).map_err(std::io::Error::other)
    })?;
    Ok(())
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}
