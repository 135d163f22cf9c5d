//! Keyframes restyled with the look of a style image (example-based, no
//! model needed): splatdiff-propagate's guided patch synthesis.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use splatdiff_propagate::exemplar::{stylize_render, ExemplarConfig};
use splatdiff_propagate::image::Image;

use super::{KeyInput, StylizeContext, Stylized, Stylizer};
use crate::error::{PipelineError, Result};

/// Settings of the exemplar stylizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExemplarStylizerConfig {
    /// The style image (PNG or JPEG; its alpha, if any, marks the usable part).
    pub style_image: PathBuf,
    /// Mix of the synthesised look over the input, 0..=1. Patch synthesis
    /// has no notion of "a little": later iterations blend its result with
    /// the splats' render by this amount, the analogue of img2img strength.
    pub strength: f64,
    pub synthesis: ExemplarConfig,
}

impl Default for ExemplarStylizerConfig {
    fn default() -> Self {
        Self { style_image: PathBuf::new(), strength: 1.0, synthesis: ExemplarConfig::default() }
    }
}

impl ExemplarStylizerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.style_image.as_os_str().is_empty() {
            return Err(PipelineError::invalid("stylize", "no style image given for the exemplar stylizer"));
        }
        if !self.style_image.is_file() {
            return Err(PipelineError::invalid(&self.style_image, "the style image does not exist"));
        }
        Ok(())
    }
}

pub struct ExemplarStylizer {
    pub config: ExemplarStylizerConfig,
}

impl Stylizer for ExemplarStylizer {
    fn stylize(&self, keys: &[KeyInput], ctx: &StylizeContext) -> Result<Stylized> {
        self.config.validate()?;
        let style = Image::read(&self.config.style_image)?;
        let s = ctx.strength as f32;
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            ctx.job.check_cancel()?;
            ctx.job.set_steps(i, keys.len(), 0.0, 1.0, "keyframe");
            let mask = &ctx.capture.frames[key.index].geometry.mask;
            let styled = stylize_render(&style, key.image, mask, &self.config.synthesis)?;
            let mut mixed = Image::new(styled.width, styled.height, 3);
            for (p, px) in mixed.data.chunks_exact_mut(3).enumerate() {
                let (a, b) = (styled.rgb(p), key.image.rgb(p));
                for c in 0..3 {
                    px[c] = s * a[c] + (1.0 - s) * b[c];
                }
            }
            out.push(mixed);
        }
        Ok(Stylized::Images(out))
    }
}
