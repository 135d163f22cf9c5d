//! Exemplar stylization: the look of a style image transferred onto a
//! render by guided patch synthesis, as EbSynth's `stylit` and `facestyle`
//! examples do. It needs no model weights, so it is the stylizer of the demo
//! and of anyone who paints or edits a keyframe in another tool.
//!
//! Two entry points: [`stylize_with_guides`] takes explicit guide pairs (a
//! style painted over a known render with its lighting passes, as StyLit
//! does); [`stylize_render`] needs only a style image and the render to
//! restyle, building guides from both images themselves: luminance (the
//! render's matched in mean and spread to the style's, so dark goes to dark
//! and light to light, as in Image Analogies) and edges, with the object
//! mask as a hard label against the style's alpha.

use serde::{Deserialize, Serialize};

use crate::error::{PropagateError, Result};
use crate::image::Image;
use crate::patchmatch::{synthesize, Constraints, Guide, Synthesis, SynthesisConfig};

/// Settings of exemplar stylization; serialisable for the run's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExemplarConfig {
    pub synthesis: SynthesisConfig,
    /// Weight of the luminance guide.
    pub luminance: f32,
    /// Weight of the edge guide.
    pub edges: f32,
}

impl Default for ExemplarConfig {
    fn default() -> Self {
        Self { synthesis: SynthesisConfig::default(), luminance: 2.0, edges: 1.0 }
    }
}

/// Synthesises the target from `style` with explicit guide pairs.
pub fn stylize_with_guides(style: &Image, guides: &[Guide], config: &SynthesisConfig) -> Result<Synthesis> {
    synthesize(&style.to_rgb(), guides, &Constraints::default(), config)
}

fn luminance(img: &Image) -> Vec<f32> {
    img.data
        .chunks_exact(img.channels)
        .map(|p| if img.channels >= 3 { 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2] } else { p[0] })
        .collect()
}

fn alpha(img: &Image) -> Vec<f32> {
    match img.channels {
        4 => img.data.chunks_exact(4).map(|p| p[3]).collect(),
        2 => img.data.chunks_exact(2).map(|p| p[1]).collect(),
        _ => vec![1.0; img.width * img.height],
    }
}

fn mean_std(v: &[f32], mask: &[f32]) -> (f32, f32) {
    let sel: Vec<f32> = v.iter().zip(mask).filter(|(_, m)| **m > 0.5).map(|(v, _)| *v).collect();
    if sel.is_empty() {
        return (0.5, 0.25);
    }
    let mean = sel.iter().sum::<f32>() / sel.len() as f32;
    let var = sel.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / sel.len() as f32;
    (mean, var.sqrt().max(1e-3))
}

/// Restyles `render` (RGB or RGBA) with the look of `style`, only inside
/// `mask` (one value per pixel of the render; 1 = object). Returns RGBA with
/// alpha = mask.
pub fn stylize_render(style: &Image, render: &Image, mask: &[f32], config: &ExemplarConfig) -> Result<Image> {
    if mask.len() != render.width * render.height {
        return Err(PropagateError::Invalid("mask must have one value per render pixel".into()));
    }
    if !mask.iter().any(|m| *m > 0.5) {
        return Ok(Image::new(render.width, render.height, 4));
    }
    let style_alpha = alpha(style);
    if !style_alpha.iter().any(|a| *a > 0.5) {
        return Err(PropagateError::Invalid("the style image is fully transparent".into()));
    }
    let (ls, lr) = (luminance(style), luminance(render));
    let ((ms, ss), (mr, sr)) = (mean_std(&ls, &style_alpha), mean_std(&lr, mask));
    let lr: Vec<f32> = lr.iter().map(|v| (v - mr) / sr * ss + ms).collect();
    let as_img = |w, h, v: Vec<f32>| Image { width: w, height: h, channels: 1, data: v };
    let guides = vec![
        Guide {
            source: as_img(style.width, style.height, ls.clone()),
            target: as_img(render.width, render.height, lr.clone()),
            weight: config.luminance,
        },
        Guide {
            source: as_img(style.width, style.height, ls).edges(),
            target: as_img(render.width, render.height, lr).edges(),
            weight: config.edges,
        },
    ];
    // The object copies only from the style's opaque part.
    let labels = (
        style_alpha.iter().map(|a| (*a > 0.5) as u8).collect(),
        mask.iter().map(|m| (*m > 0.5) as u8).collect::<Vec<u8>>(),
    );
    let synth = synthesize(
        &style.to_rgb(),
        &guides,
        &Constraints { labels: Some(labels), ..Default::default() },
        &config.synthesis,
    )?;
    let mut out = Image::new(render.width, render.height, 4);
    for (i, m) in mask.iter().enumerate() {
        if *m > 0.0 {
            let c = &synth.image.data[i * 3..i * 3 + 3];
            out.data[i * 4..i * 4 + 4].copy_from_slice(&[c[0], c[1], c[2], m.min(1.0)]);
        }
    }
    Ok(out)
}
