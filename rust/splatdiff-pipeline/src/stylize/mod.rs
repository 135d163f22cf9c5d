//! The `stylize` stage: the keyframes of an iteration restyled by one of
//! several swappable [`Stylizer`]s.
//!
//! * [`diffusion`]: Stable Diffusion img2img with ControlNets and a
//!   consistency mode (splatdiff-diffusion, natively through candle);
//! * [`exemplar`]: the look of a style image (splatdiff-propagate's
//!   example-based synthesis);
//! * [`external`]: the run pauses with the keyframes in a folder; the user
//!   edits them in any 2D tool and resumes;
//! * [`command`]: an external program run on each keyframe.
//!
//! Each is built from one variant of [`StylizerConfig`], the typed,
//! serialisable settings that go into the run's manifest.

pub mod command;
pub mod diffusion;
pub mod exemplar;
pub mod external;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::Capture;

use crate::error::{PipelineError, Result};
use crate::job::JobContext;
use crate::media::contact_sheet;
use crate::metrics::{keyframe_pairs, reprojection_error};
use crate::stage::{Stage, StageContext};

/// One keyframe to restyle.
pub struct KeyInput<'a> {
    /// The frame's name (file stem in the capture), used for file names.
    pub name: &'a str,
    /// Index of the frame in the capture.
    pub index: usize,
    /// What to restyle: the capture's render in the first iteration, the
    /// splats' render after. RGBA, straight alpha.
    pub image: &'a Image,
}

impl KeyInput<'_> {
    /// Reads, as RGB, an image restyled for this keyframe outside splatdiff
    /// (a user's edit, a program's output); one of another size is an error
    /// naming `path`, `what` saying whose image it is.
    pub fn read_restyled(&self, path: &Path, what: &str) -> Result<Image> {
        let image = Image::read(path)?;
        if (image.width, image.height) != (self.image.width, self.image.height) {
            return Err(PipelineError::invalid(
                path,
                format!(
                    "{what} is {}x{}, the keyframe is {}x{}: keep the size",
                    image.width, image.height, self.image.width, self.image.height
                ),
            ));
        }
        Ok(image.to_rgb())
    }
}

/// What a stylizer produced.
pub enum Stylized {
    /// One image per keyframe, in input order, of the keyframes' size (RGB
    /// or RGBA; the stage sets alpha to the object mask).
    Images(Vec<Image>),
    /// The run waits for the user (external edits): nothing is finished.
    Paused { folder: PathBuf, message: String },
}

/// What a stylizer gets besides the images.
pub struct StylizeContext<'a> {
    pub job: &'a JobContext,
    /// The capture: cameras, depth, normals and masks of every frame.
    pub capture: &'a Capture,
    /// A scratch folder inside the stage's staging folder.
    pub scratch: &'a Path,
    /// A folder the user sees and edits (external edits), outside staging.
    pub edit_dir: PathBuf,
    /// This iteration's strength, 0..=1: how far from the input to go.
    pub strength: f64,
    /// The user said the external edits are done.
    pub resume: bool,
}

/// Restyles keyframes. One small trait, so stylizers are swappable objects.
pub trait Stylizer: Send + Sync {
    /// Restyles `keys`; reports progress and honours cancellation through `ctx.job`.
    fn stylize(&self, keys: &[KeyInput], ctx: &StylizeContext) -> Result<Stylized>;
}

/// The stylizer of a run and its settings (tagged by `kind` in JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StylizerConfig {
    Diffusion(diffusion::DiffusionStylizerConfig),
    Exemplar(exemplar::ExemplarStylizerConfig),
    External(external::ExternalConfig),
    Command(command::CommandConfig),
}

impl StylizerConfig {
    /// The strength of the first iteration.
    pub fn strength(&self) -> f64 {
        match self {
            Self::Diffusion(c) => c.strength,
            Self::Exemplar(c) => c.strength,
            Self::External(c) => c.strength,
            Self::Command(c) => c.strength,
        }
    }

    /// The same settings at another strength (later iterations).
    pub fn with_strength(&self, strength: f64) -> Self {
        let mut out = self.clone();
        match &mut out {
            Self::Diffusion(c) => c.strength = strength,
            Self::Exemplar(c) => c.strength = strength,
            Self::External(c) => c.strength = strength,
            Self::Command(c) => c.strength = strength,
        }
        out
    }

    /// Checks what can be checked before anything runs (files exist,
    /// values in range), naming the file or setting at fault.
    pub fn validate(&self) -> Result<()> {
        let strength = self.strength();
        if !(0.0..=1.0).contains(&strength) || strength.is_nan() {
            return Err(PipelineError::invalid("stylize", format!("strength {strength} is not within 0..1")));
        }
        match self {
            Self::Diffusion(c) => c.validate(),
            Self::Exemplar(c) => c.validate(),
            Self::External(_) => Ok(()),
            Self::Command(c) => c.validate(),
        }
    }

    /// Makes the file paths of the settings (model, ControlNets, style
    /// image) absolute, taking relative ones from `base` (a config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            Self::Diffusion(c) => {
                fix(&mut c.model);
                c.config_from.as_mut().map(fix);
                c.controlnets.iter_mut().for_each(|n| fix(&mut n.model));
            }
            Self::Exemplar(c) => fix(&mut c.style_image),
            Self::External(_) | Self::Command(_) => {}
        }
    }

    pub fn build(&self) -> Box<dyn Stylizer> {
        match self {
            Self::Diffusion(c) => Box::new(diffusion::DiffusionStylizer { config: c.clone() }),
            Self::Exemplar(c) => Box::new(exemplar::ExemplarStylizer { config: c.clone() }),
            Self::External(_) => Box::new(external::ExternalStylizer),
            Self::Command(c) => Box::new(command::CommandStylizer { config: c.clone() }),
        }
    }
}

/// Which frames are keyframes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyframeConfig {
    /// How many, evenly spaced over the turntable, when `frames` is empty.
    pub count: usize,
    /// Explicit 0-based frame indices picked by the user.
    pub frames: Vec<usize>,
}

impl Default for KeyframeConfig {
    fn default() -> Self {
        Self { count: 8, frames: Vec::new() }
    }
}

impl KeyframeConfig {
    /// The keyframes' frame indices, sorted, for a capture of `n` frames.
    pub fn pick(&self, n: usize, capture: &Path) -> Result<Vec<usize>> {
        if self.frames.is_empty() {
            if self.count == 0 {
                return Err(PipelineError::invalid("keyframes", "count must be at least 1"));
            }
            return Ok(splatdiff_propagate::propagate::evenly_spaced_keys(n, self.count));
        }
        let mut frames = self.frames.clone();
        frames.sort_unstable();
        frames.dedup();
        if let Some(bad) = frames.iter().find(|&&f| f >= n) {
            return Err(PipelineError::invalid(
                capture,
                format!("keyframe {bad} does not exist: the capture has {n} frames (0..{})", n - 1),
            ));
        }
        Ok(frames)
    }
}

/// The `stylize-N` stage of iteration N.
pub struct StylizeStage<'a> {
    pub capture: &'a Capture,
    pub iteration: usize,
    /// Stage whose images are restyled (`capture` or the previous `render-N`).
    pub source: String,
    pub keyframes: Vec<usize>,
    pub stylizer: StylizerConfig,
    pub resume: bool,
}

/// The edit folder of iteration `n` of an external stylizer.
pub fn edit_dir(work: &Path, iteration: usize) -> PathBuf {
    work.join(format!("edit-{iteration}"))
}

/// The images a stage restyles: the capture's renders or a `render-N` stage's.
pub fn source_images(capture: &Capture, work: &Path, source: &str) -> Result<Vec<Image>> {
    if source == "capture" {
        return Ok(capture.frames.iter().map(|f| with_mask_alpha(&f.render, &f.geometry.mask)).collect());
    }
    capture
        .dataset
        .frames
        .iter()
        .map(|f| {
            let path = work.join(source).join("images").join(format!("{}.png", f.name));
            Ok(Image::read(&path)?)
        })
        .collect()
}

/// `image` as RGBA with alpha = `mask`.
pub fn with_mask_alpha(image: &Image, mask: &[f32]) -> Image {
    let mut out = Image::new(image.width, image.height, 4);
    for (i, px) in out.data.chunks_exact_mut(4).enumerate() {
        px[..3].copy_from_slice(&image.rgb(i));
        px[3] = mask[i];
    }
    out
}

impl Stage for StylizeStage<'_> {
    fn name(&self) -> String {
        format!("stylize-{}", self.iteration)
    }

    fn config(&self) -> Value {
        let names: Vec<&str> = self.keyframes.iter().map(|&i| self.capture.dataset.frames[i].name.as_str()).collect();
        json!({ "source": self.source, "keyframes": names, "stylizer": self.stylizer })
    }

    fn run(&self, ctx: &StageContext) -> Result<Value> {
        let job = ctx.job;
        let sources = source_images(self.capture, ctx.work.root(), &self.source)?;
        let frames = &self.capture.dataset.frames;
        let keys: Vec<KeyInput> = self
            .keyframes
            .iter()
            .map(|&index| KeyInput { name: &frames[index].name, index, image: &sources[index] })
            .collect();
        let scratch = ctx.out.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|e| PipelineError::io(&scratch, e))?;
        let sctx = StylizeContext {
            job,
            capture: self.capture,
            scratch: &scratch,
            edit_dir: edit_dir(ctx.work.root(), self.iteration),
            strength: self.stylizer.strength(),
            resume: self.resume,
        };
        let started = std::time::Instant::now();
        let images = match self.stylizer.build().stylize(&keys, &sctx)? {
            Stylized::Images(images) => images,
            Stylized::Paused { folder, message } => return Err(PipelineError::Paused { folder, message }),
        };
        let seconds = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&scratch);
        if images.len() != keys.len() {
            return Err(PipelineError::Internal(format!(
                "stylizer returned {} images for {} keyframes",
                images.len(),
                keys.len()
            )));
        }
        let (keys_dir, before_dir) = (ctx.out.join("keys"), ctx.out.join("before"));
        for dir in [&keys_dir, &before_dir] {
            std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
        }
        let mut restyled = Vec::with_capacity(keys.len());
        for (key, image) in keys.iter().zip(&images) {
            let mask = &self.capture.frames[key.index].geometry.mask;
            if (image.width, image.height) != (key.image.width, key.image.height) {
                return Err(PipelineError::Internal(format!("stylizer returned a resized image for {}", key.name)));
            }
            let image = with_mask_alpha(image, mask);
            image.write_png(&keys_dir.join(format!("{}.png", key.name)))?;
            key.image.write_png(&before_dir.join(format!("{}.png", key.name)))?;
            restyled.push(image);
        }
        let sheet: Vec<&Image> = keys.iter().map(|k| k.image).chain(&restyled).collect();
        contact_sheet(&sheet, keys.len(), 192)?.write_png(&ctx.out.join("keyframes.png"))?;
        let geoms: Vec<_> = keys.iter().map(|k| &self.capture.frames[k.index].geometry).collect();
        let refs: Vec<&Image> = restyled.iter().collect();
        let consistency = reprojection_error(&geoms, &refs, &keyframe_pairs(keys.len()));
        job.log(format!("{}: {} keyframes restyled in {seconds:.1} s", self.name(), keys.len()));
        Ok(json!({
            "keys": "keys",
            "before": "before",
            "sheet": "keyframes.png",
            "keyframes": keys.iter().map(|k| k.name).collect::<Vec<_>>(),
            "strength": self.stylizer.strength(),
            "seconds": seconds,
            "keyframe_reprojection": consistency,
        }))
    }
}
