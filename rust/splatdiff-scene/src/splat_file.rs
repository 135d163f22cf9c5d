//! The compact `.splat` format of antimatter15's WebGL splat viewer, for
//! sharing a result that opens in a browser.
//!
//! 32 bytes per splat, no header: position (3 × f32 LE), scale (3 × f32 LE,
//! linear standard deviations), colour RGBA (4 × u8: the degree-0 SH colour
//! and the sigmoid of the opacity), rotation (4 × u8: the normalised
//! quaternion `w, x, y, z` mapped from `[-1, 1]` to `q·128 + 128`). Higher SH
//! bands are dropped. Splats are sorted by decreasing `volume · opacity`, as
//! the viewer's own converter does, so that a partially loaded file shows the
//! most visible splats first.

use std::io::Write as _;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Result, SceneError};
use crate::ply::{sigmoid, GaussianSplats, SH_C0};

const RECORD: usize = 32;

/// Writes `splats` as a `.splat` file, atomically.
pub fn write_splat_file(path: &Path, splats: &GaussianSplats) -> Result<()> {
    splats.validate().map_err(|problem| SceneError::invalid(path, problem))?;
    let importance: Vec<f32> =
        splats.scales.iter().zip(&splats.opacity).map(|(s, &o)| (s[0] + s[1] + s[2]).exp() * sigmoid(o)).collect();
    let mut order: Vec<usize> = (0..splats.len()).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
    write_atomic(path, |w| {
        for i in order {
            w.write_all(&encode(splats, i))?;
        }
        Ok(())
    })
}

/// Reads a `.splat` file back as degree-0 splats. Colours, opacities and
/// rotations come back to within the 8-bit quantisation of the format;
/// opacities of 0 and 255 map to finite logits half a step inside `(0, 1)`.
pub fn read_splat_file(path: &Path) -> Result<GaussianSplats> {
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    if bytes.len() % RECORD != 0 {
        return Err(SceneError::invalid(
            path,
            format!("size {} bytes is not a multiple of the {RECORD}-byte .splat record", bytes.len()),
        ));
    }
    let mut splats = GaussianSplats::default();
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let float = |k: usize| f32::from_le_bytes(std::array::from_fn(|b| record[4 * k + b]));
        let position = [float(0), float(1), float(2)];
        let scale = [float(3), float(4), float(5)];
        if position.iter().any(|v| !v.is_finite()) || scale.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(SceneError::invalid(
                path,
                format!("splat {i}: position {position:?} or scale {scale:?} is not finite and positive"),
            ));
        }
        let byte = |k: usize| f32::from(record[24 + k]);
        splats.positions.push(position);
        splats.scales.push(scale.map(f32::ln));
        splats.sh_dc.push([0, 1, 2].map(|k| (byte(k) / 255.0 - 0.5) / SH_C0));
        let alpha = (byte(3) / 255.0).clamp(0.5 / 255.0, 254.5 / 255.0);
        splats.opacity.push((alpha / (1.0 - alpha)).ln());
        splats.rotations.push([4, 5, 6, 7].map(|k| (byte(k) - 128.0) / 128.0));
    }
    Ok(splats)
}

/// The 32-byte record of splat `i`.
fn encode(splats: &GaussianSplats, i: usize) -> [u8; RECORD] {
    let to_byte = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    let mut record = [0u8; RECORD];
    let floats = splats.positions[i].into_iter().chain(splats.scales[i].map(f32::exp));
    for (slot, v) in record.chunks_exact_mut(4).zip(floats) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
    let [r, g, b] = splats.sh_dc[i].map(|c| to_byte(0.5 + SH_C0 * c));
    let rotation = normalised(splats.rotations[i]).map(|q| (q * 128.0 + 128.0).round().clamp(0.0, 255.0) as u8);
    record[24..28].copy_from_slice(&[r, g, b, to_byte(sigmoid(splats.opacity[i]))]);
    record[28..32].copy_from_slice(&rotation);
    record
}

/// `q` scaled to unit length; the identity rotation when `q` has no usable
/// length (zero or not finite).
fn normalised(q: [f32; 4]) -> [f32; 4] {
    let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm.is_finite() && norm > 0.0 {
        q.map(|v| v / norm)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    }
}
