//! Float images with any number of interleaved channels: the currency of
//! the synthesis. Guides are kept in float (never quantised to 8 bits), so
//! depth-derived positions and smooth shading gradients keep their precision.

use std::path::Path;

use crate::error::{PropagateError, Result};

/// A float image, `channels` values per pixel, interleaved, rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// A black image.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Self { width, height, channels, data: vec![0.0; width * height * channels] }
    }

    /// Wraps interleaved data; the length must match the size.
    pub fn from_data(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != width * height * channels {
            return Err(PropagateError::Invalid(format!(
                "image data has {} values, {width}x{height}x{channels} needs {}",
                data.len(),
                width * height * channels
            )));
        }
        Ok(Self { width, height, channels, data })
    }

    pub fn pixel(&self, x: usize, y: usize) -> &[f32] {
        let i = (y * self.width + x) * self.channels;
        &self.data[i..i + self.channels]
    }

    pub fn pixel_mut(&mut self, x: usize, y: usize) -> &mut [f32] {
        let i = (y * self.width + x) * self.channels;
        &mut self.data[i..i + self.channels]
    }

    /// Bilinear sample at continuous pixel coordinates (pixel centres at
    /// +0.5), clamped to the border, into `out` (one value per channel).
    pub fn sample_bilinear(&self, x: f32, y: f32, out: &mut [f32]) {
        let fx = (x - 0.5).clamp(0.0, (self.width - 1) as f32);
        let fy = (y - 0.5).clamp(0.0, (self.height - 1) as f32);
        let x0 = fx.floor() as usize;
        let y0 = fy.floor() as usize;
        let x1 = (x0 + 1).min(self.width - 1);
        let y1 = (y0 + 1).min(self.height - 1);
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let (a, b, c, d) = (self.pixel(x0, y0), self.pixel(x1, y0), self.pixel(x0, y1), self.pixel(x1, y1));
        for ch in 0..self.channels {
            let top = a[ch] + (b[ch] - a[ch]) * tx;
            let bottom = c[ch] + (d[ch] - c[ch]) * tx;
            out[ch] = top + (bottom - top) * ty;
        }
    }

    /// RGB of pixel `i` (row-major index): the first three channels, or the
    /// grey value three times for 1- and 2-channel images.
    pub fn rgb(&self, i: usize) -> [f32; 3] {
        let p = &self.data[i * self.channels..(i + 1) * self.channels];
        if self.channels >= 3 {
            [p[0], p[1], p[2]]
        } else {
            [p[0]; 3]
        }
    }

    /// The image as 3-channel RGB (alpha dropped, grey expanded).
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let mut out = Image::new(self.width, self.height, 3);
        for i in 0..self.width * self.height {
            out.data[i * 3..i * 3 + 3].copy_from_slice(&self.rgb(i));
        }
        out
    }

    /// The `w`x`h` rectangle whose top-left pixel is (`x0`, `y0`).
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Image {
        let c = self.channels;
        let mut data = Vec::with_capacity(w * h * c);
        for y in y0..y0 + h {
            data.extend_from_slice(&self.data[(y * self.width + x0) * c..(y * self.width + x0 + w) * c]);
        }
        Image { width: w, height: h, channels: c, data }
    }

    /// The channels `range` of every pixel as a new image.
    pub fn select_channels(&self, range: std::ops::Range<usize>) -> Image {
        let c = range.len();
        let mut data = Vec::with_capacity(self.width * self.height * c);
        for px in self.data.chunks_exact(self.channels) {
            data.extend_from_slice(&px[range.clone()]);
        }
        Image { width: self.width, height: self.height, channels: c, data }
    }

    /// Half the size in each dimension (rounded up), low-pass filtered first
    /// with a separable [1 4 6 4 1]/16 kernel so fine texture does not alias
    /// into the coarse levels of the pyramid.
    pub fn downsample(&self) -> Image {
        let blurred = self.blur_binomial();
        let (w, h) = (self.width.div_ceil(2), self.height.div_ceil(2));
        let mut out = Image::new(w, h, self.channels);
        for y in 0..h {
            for x in 0..w {
                let src = blurred.pixel((2 * x).min(self.width - 1), (2 * y).min(self.height - 1));
                out.pixel_mut(x, y).copy_from_slice(src);
            }
        }
        out
    }

    fn blur_binomial(&self) -> Image {
        const K: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
        let c = self.channels;
        let mut tmp = Image::new(self.width, self.height, c);
        for y in 0..self.height {
            for x in 0..self.width {
                let dst = (y * self.width + x) * c;
                for (k, w) in K.iter().enumerate() {
                    let sx = (x as isize + k as isize - 2).clamp(0, self.width as isize - 1) as usize;
                    let src = (y * self.width + sx) * c;
                    for ch in 0..c {
                        tmp.data[dst + ch] += w * self.data[src + ch];
                    }
                }
            }
        }
        let mut out = Image::new(self.width, self.height, c);
        for y in 0..self.height {
            for x in 0..self.width {
                let dst = (y * self.width + x) * c;
                for (k, w) in K.iter().enumerate() {
                    let sy = (y as isize + k as isize - 2).clamp(0, self.height as isize - 1) as usize;
                    let src = (sy * self.width + x) * c;
                    for ch in 0..c {
                        out.data[dst + ch] += w * tmp.data[src + ch];
                    }
                }
            }
        }
        out
    }

    /// Resized to `width`x`height` by bilinear sampling (for upsampling
    /// between pyramid levels).
    pub fn resize_bilinear(&self, width: usize, height: usize) -> Image {
        let mut out = Image::new(width, height, self.channels);
        let (sx, sy) = (self.width as f32 / width as f32, self.height as f32 / height as f32);
        let mut px = vec![0.0; self.channels];
        for y in 0..height {
            for x in 0..width {
                self.sample_bilinear((x as f32 + 0.5) * sx, (y as f32 + 0.5) * sy, &mut px);
                out.pixel_mut(x, y).copy_from_slice(&px);
            }
        }
        out
    }

    /// Gradient magnitude (Sobel) of the mean of the channels: the edge guide.
    pub fn edges(&self) -> Image {
        let (w, h) = (self.width, self.height);
        let lum: Vec<f32> =
            self.data.chunks_exact(self.channels).map(|p| p.iter().sum::<f32>() / self.channels as f32).collect();
        let at =
            |x: isize, y: isize| lum[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize];
        let mut out = Image::new(w, h, 1);
        for y in 0..h as isize {
            for x in 0..w as isize {
                let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                    - at(x - 1, y - 1)
                    - 2.0 * at(x - 1, y)
                    - at(x - 1, y + 1);
                let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                    - at(x - 1, y - 1)
                    - 2.0 * at(x, y - 1)
                    - at(x + 1, y - 1);
                out.data[y as usize * w + x as usize] = (gx * gx + gy * gy).sqrt() / 4.0;
            }
        }
        out
    }

    /// Reads a PNG or JPEG as float 0..1 with its own channel count (grey 1,
    /// RGB 3, RGBA 4; grey+alpha becomes RGBA). 16-bit files keep their precision.
    pub fn read(path: &Path) -> Result<Image> {
        let img = image::open(path).map_err(|e| PropagateError::file(path, format!("cannot read image: {e}")))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(PropagateError::file(path, "image is empty"));
        }
        let (channels, data): (usize, Vec<f32>) = match img.color() {
            image::ColorType::L8 | image::ColorType::L16 => (1, img.to_luma32f().into_raw()),
            image::ColorType::Rgb8 | image::ColorType::Rgb16 | image::ColorType::Rgb32F => {
                (3, img.to_rgb32f().into_raw())
            }
            _ => (4, img.to_rgba32f().into_raw()),
        };
        Image::from_data(w, h, channels, data)
    }

    /// Writes an 8-bit PNG (1, 3 or 4 channels), atomically.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        use image::ImageEncoder as _;
        let color = match self.channels {
            1 => image::ExtendedColorType::L8,
            3 => image::ExtendedColorType::Rgb8,
            4 => image::ExtendedColorType::Rgba8,
            c => return Err(PropagateError::file(path, format!("cannot write a {c}-channel image as PNG"))),
        };
        let bytes: Vec<u8> = self.data.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&bytes, self.width as u32, self.height as u32, color)
            .map_err(|e| PropagateError::file(path, format!("cannot encode PNG: {e}")))?;
        splatdiff_scene::atomic::write_bytes_atomic(path, &png)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_halves_and_preserves_constant() {
        let img = Image::from_data(5, 3, 2, vec![0.25; 30]).unwrap();
        let d = img.downsample();
        assert_eq!((d.width, d.height), (3, 2));
        assert!(d.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn bilinear_interpolates_between_centres() {
        let img = Image::from_data(2, 1, 1, vec![0.0, 1.0]).unwrap();
        let mut v = [0.0];
        img.sample_bilinear(1.0, 0.5, &mut v);
        assert!((v[0] - 0.5).abs() < 1e-6);
        img.sample_bilinear(0.5, 0.5, &mut v);
        assert!(v[0].abs() < 1e-6);
    }
}
