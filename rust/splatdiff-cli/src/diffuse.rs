//! `splatdiff diffuse`: restyle a folder of keyframes with Stable Diffusion
//! img2img, ControlNets and a consistency mode, natively (no Python).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use indicatif::{ProgressBar, ProgressStyle};
use splatdiff_diffusion::control::{
    canny_control, depth_control, lineart_control, normal_control, CannyParams, ControlKind, LineartParams,
};
use splatdiff_diffusion::controlnet::{ControlNetModel, MultiControlNet};
use splatdiff_diffusion::model::{LoraSpec, ModelOptions, StableDiffusion};
use splatdiff_diffusion::pipeline::{
    restyle, ConsistencyMode, ControlUnit, DiffusionConfig, Keyframe, Progress, RunControl, Stage,
};
use splatdiff_diffusion::scheduler::SchedulerKind;
use splatdiff_pipeline::metrics::{keyframe_pairs, reprojection_error};
use splatdiff_propagate::geometry::FrameGeometry;
use splatdiff_propagate::image::Image;
use splatdiff_scene::atomic::write_bytes_atomic;
use splatdiff_scene::maps::read_float_exr;
use splatdiff_scene::transforms::{read_transforms, Frame};
use splatdiff_scene::{Camera, FloatMap};

#[derive(Args)]
pub struct DiffuseArgs {
    /// The model: a diffusers folder (unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/) or a single-file .safetensors checkpoint (SD 1.x / 2.x).
    #[arg(long)]
    pub model: PathBuf,
    /// A diffusers folder whose configs and tokenizer to use with a single-file checkpoint.
    #[arg(long)]
    pub config_from: Option<PathBuf>,
    /// A ControlNet: KIND=DIR[:WEIGHT[:START:END]], KIND one of depth, normal,
    /// canny, lineart; DIR a diffusers ControlNet folder. Repeatable.
    #[arg(long, value_name = "KIND=DIR[:WEIGHT[:START:END]]")]
    pub controlnet: Vec<String>,
    /// A LoRA to merge: FILE[:SCALE]. Repeatable.
    #[arg(long, value_name = "FILE[:SCALE]")]
    pub lora: Vec<String>,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Denoising strength in (0, 1].
    #[arg(long, default_value_t = 0.6)]
    pub strength: f64,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// ddim, euler-a, dpmpp-2m (Karras) or lcm.
    #[arg(long, default_value = "dpmpp-2m")]
    pub scheduler: String,
    /// none (each keyframe alone), grid (tiled into one canvas) or
    /// cross-frame (shared self-attention keys).
    #[arg(long, default_value = "none")]
    pub consistency: String,
    /// Grid mode: columns of the canvas (default: about the square root of the count).
    #[arg(long)]
    pub grid_cols: Option<usize>,
    /// Cross-frame mode: anchor keyframes, by index in name order (default 0).
    #[arg(long, value_delimiter = ',')]
    pub anchors: Vec<usize>,
    /// Folder of keyframe images (PNG or JPEG), restyled in name order.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output folder: restyled images under the same names, and diffuse.json.
    #[arg(long)]
    pub out: PathBuf,
    /// The capture (folder with transforms.json, or the file) whose depth and
    /// normal passes and cameras belong to the keyframes (matched by name).
    /// Needed for depth and normal ControlNets; also enables the consistency
    /// measurement.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// A parsed `--controlnet` value.
#[derive(Debug, PartialEq)]
struct ControlNetArg {
    kind: ControlKind,
    dir: PathBuf,
    weight: f64,
    start: f64,
    end: f64,
}

/// Parses KIND=DIR[:WEIGHT[:START:END]]; numbers are taken from the right so
/// a DIR may itself contain ':'.
fn parse_controlnet(s: &str) -> Result<ControlNetArg> {
    let Some((kind, rest)) = s.split_once('=') else {
        bail!("--controlnet {s:?}: expected KIND=DIR[:WEIGHT[:START:END]]");
    };
    let kind: ControlKind = kind.parse().with_context(|| format!("--controlnet {s:?}"))?;
    let mut dir = rest;
    let mut numbers = Vec::new();
    while numbers.len() < 3 {
        match dir.rsplit_once(':') {
            Some((head, tail)) if tail.parse::<f64>().is_ok() => {
                numbers.insert(0, tail.parse::<f64>().expect("checked"));
                dir = head;
            }
            _ => break,
        }
    }
    let (weight, start, end) = match numbers.as_slice() {
        [] => (1.0, 0.0, 1.0),
        [w] => (*w, 0.0, 1.0),
        [w, s, e] => (*w, *s, *e),
        _ => bail!("--controlnet {s:?}: give WEIGHT, or WEIGHT:START:END"),
    };
    if dir.is_empty() {
        bail!("--controlnet {s:?}: no ControlNet folder given");
    }
    Ok(ControlNetArg { kind, dir: PathBuf::from(dir), weight, start, end })
}

fn parse_lora(s: &str) -> Result<LoraSpec> {
    match s.rsplit_once(':') {
        Some((path, scale)) if scale.parse::<f64>().is_ok() => {
            Ok(LoraSpec { path: PathBuf::from(path), scale: scale.parse().expect("checked") })
        }
        _ => Ok(LoraSpec { path: PathBuf::from(s), scale: 1.0 }),
    }
}

fn parse_consistency(args: &DiffuseArgs, count: usize) -> Result<ConsistencyMode> {
    Ok(match args.consistency.as_str() {
        "none" => ConsistencyMode::None,
        "grid" => ConsistencyMode::Grid {
            cols: args.grid_cols.unwrap_or_else(|| (count as f64).sqrt().ceil().max(1.0) as usize),
        },
        "cross-frame" => ConsistencyMode::CrossFrame {
            anchors: if args.anchors.is_empty() { vec![0] } else { args.anchors.clone() },
        },
        other => bail!("--consistency {other}: expected none, grid or cross-frame"),
    })
}

/// The keyframe images of a folder, in name order, as (name, image).
fn read_inputs(dir: &Path) -> Result<Vec<(String, DynamicImage)>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read the input folder {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            p.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{}: no PNG or JPEG images to restyle", dir.display());
    }
    paths
        .into_iter()
        .map(|p| {
            let img = image::open(&p).with_context(|| format!("cannot read image {}", p.display()))?;
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Ok((name, img))
        })
        .collect()
}

/// The capture frame of each keyframe, matched by name.
fn match_frames(data: &Path, names: &[String]) -> Result<Vec<Frame>> {
    let json = if data.is_dir() { data.join("transforms.json") } else { data.to_path_buf() };
    let dataset = read_transforms(&json)?;
    for w in &dataset.warnings {
        eprintln!("warning: {w}");
    }
    names
        .iter()
        .map(|n| {
            dataset
                .frames
                .iter()
                .find(|f| &f.name == n)
                .cloned()
                .with_context(|| format!("{}: no frame named {n:?} for the input image of that name", json.display()))
        })
        .collect()
}

fn read_pass(path: Option<&PathBuf>, what: &str, frame: &Frame) -> Result<FloatMap> {
    let path = path.with_context(|| format!("capture frame {:?} has no {what} pass", frame.name))?;
    Ok(read_float_exr(path)?)
}

/// The control image of `kind` for one keyframe.
fn control_image(kind: ControlKind, image: &RgbImage, frame: Option<&Frame>) -> Result<RgbImage> {
    let need_frame =
        || frame.with_context(|| format!("a {kind} ControlNet needs --data (the capture with its passes)"));
    Ok(match kind {
        ControlKind::Depth => {
            let f = need_frame()?;
            let map = read_pass(f.depth_path.as_ref(), "depth", f)?;
            depth_control(&map).with_context(|| format!("depth pass of frame {:?}", f.name))?
        }
        ControlKind::Normal => {
            let f = need_frame()?;
            let map = read_pass(f.normal_path.as_ref(), "normal", f)?;
            normal_control(&map, &f.camera).with_context(|| format!("normal pass of frame {:?}", f.name))?
        }
        ControlKind::Canny => canny_control(image, &CannyParams::default())?,
        ControlKind::Lineart => lineart_control(image, &LineartParams::default())?,
    })
}

fn write_png(path: &Path, image: &DynamicImage) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_bytes_atomic(path, &bytes)?;
    Ok(())
}

pub fn run_diffuse(args: DiffuseArgs) -> Result<()> {
    let scheduler: SchedulerKind = args.scheduler.parse().context("--scheduler")?;
    let controlnet_args = args.controlnet.iter().map(|s| parse_controlnet(s)).collect::<Result<Vec<_>>>()?;
    let inputs = read_inputs(&args.input)?;
    let names: Vec<String> = inputs.iter().map(|(n, _)| n.clone()).collect();
    let frames = match &args.data {
        Some(d) => Some(match_frames(d, &names)?),
        None => None,
    };
    let config = DiffusionConfig {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        strength: args.strength,
        steps: args.steps,
        guidance_scale: args.guidance,
        seed: args.seed,
        scheduler,
        consistency: parse_consistency(&args, inputs.len())?,
        controlnets: controlnet_args
            .iter()
            .map(|c| ControlUnit { kind: c.kind, model: c.dir.clone(), weight: c.weight, start: c.start, end: c.end })
            .collect(),
    };
    config.validate()?;

    let keyframes = inputs
        .iter()
        .enumerate()
        .map(|(i, (_, img))| {
            let rgb = img.to_rgb8();
            let frame = frames.as_ref().map(|f| &f[i]);
            let controls =
                config.controlnets.iter().map(|c| control_image(c.kind, &rgb, frame)).collect::<Result<Vec<_>>>()?;
            Ok(Keyframe { image: rgb, controls })
        })
        .collect::<Result<Vec<_>>>()?;

    let start = Instant::now();
    let device = candle_core::Device::Cpu;
    let options = ModelOptions {
        load: splatdiff_diffusion::loader::LoadOptions { config_dir: args.config_from.clone(), prediction_type: None },
        loras: args.lora.iter().map(|s| parse_lora(s)).collect::<Result<Vec<_>>>()?,
        ..ModelOptions::default()
    };
    let mut model = StableDiffusion::load(&args.model, &options, &device)?;
    let nets = controlnet_args
        .iter()
        .map(|c| ControlNetModel::from_folder(&c.dir, model.unet.config(), model.dtype, &device))
        .collect::<splatdiff_diffusion::Result<Vec<_>>>()?;
    let nets = MultiControlNet::new(nets);
    let loaded = start.elapsed().as_secs_f64();

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("diffuse [{bar:40}] {pos}/{len} steps, {eta} left").expect("valid template"),
    );
    let mut on_progress = |p: Progress| {
        if p.stage == Stage::Denoising {
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
        }
    };
    let mut control = RunControl { progress: Some(&mut on_progress), cancel: None };
    let result = restyle(&mut model, &nets, &config, &keyframes, &mut control)?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64() - loaded;
    for m in &result.messages {
        eprintln!("note: {m}");
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for ((name, input), out) in inputs.iter().zip(&result.images) {
        // Keep the input's alpha (the object mask of a render).
        let image = if input.color().has_alpha() {
            let alpha = input.to_rgba8();
            DynamicImage::ImageRgba8(RgbaImage::from_fn(out.width(), out.height(), |x, y| {
                let p = out.get_pixel(x, y);
                image::Rgba([p[0], p[1], p[2], alpha.get_pixel(x, y)[3]])
            }))
        } else {
            DynamicImage::ImageRgb8(out.clone())
        };
        write_png(&args.out.join(format!("{name}.png")), &image)?;
    }

    let consistency = match &frames {
        Some(frames) => measure_consistency(&result.images, frames)?,
        None => serde_json::Value::Null,
    };
    let report = serde_json::json!({
        "model": args.model,
        "config": config,
        "keyframes": names,
        "messages": result.messages,
        "load_seconds": loaded,
        "seconds": seconds,
        "consistency": consistency,
    });
    write_bytes_atomic(&args.out.join("diffuse.json"), &serde_json::to_vec_pretty(&report)?)?;
    println!(
        "restyled {} keyframes in {seconds:.1} s (model loaded in {loaded:.1} s) into {}",
        result.images.len(),
        args.out.display()
    );
    if let Some(e) = consistency.get("mean_abs_error").and_then(|v| v.as_f64()) {
        println!("photometric reprojection error between keyframes: {e:.4}");
    }
    Ok(())
}

/// The reprojection error between restyled keyframes through the capture's
/// depth and cameras (the run's own metric); `null` with a reason when the
/// passes are missing or of another size.
fn measure_consistency(images: &[RgbImage], frames: &[Frame]) -> Result<serde_json::Value> {
    if images.len() < 2 {
        return Ok(serde_json::json!({"skipped": "needs at least two keyframes"}));
    }
    let mut geometries = Vec::with_capacity(frames.len());
    let mut colours = Vec::with_capacity(frames.len());
    for (f, img) in frames.iter().zip(images) {
        let Some(path) = &f.depth_path else {
            return Ok(serde_json::json!({"skipped": format!("frame {:?} has no depth pass", f.name)}));
        };
        let d = read_float_exr(path)?;
        if (d.width, d.height) != img.dimensions() || d.channels != 1 {
            return Ok(
                serde_json::json!({"skipped": format!("depth pass of frame {:?} is not a one-channel map of the image's size", f.name)}),
            );
        }
        let (w, h) = (d.width as usize, d.height as usize);
        let mask = d.data.iter().map(|&z| if z > 0.0 { 1.0 } else { 0.0 }).collect();
        let camera = Camera::new(f.camera.cam_to_world, f.camera.intrinsics.scaled(d.width, d.height));
        geometries.push(FrameGeometry { camera, width: w, height: h, depth: Some(d.data), normals: None, mask });
        colours.push(Image::from_data(w, h, 3, img.as_raw().iter().map(|&v| v as f32 / 255.0).collect())?);
    }
    let geoms: Vec<&FrameGeometry> = geometries.iter().collect();
    let refs: Vec<&Image> = colours.iter().collect();
    let error = reprojection_error(&geoms, &refs, &keyframe_pairs(refs.len()));
    Ok(match error {
        Some(e) => serde_json::json!({ "mean_abs_error": e }),
        None => serde_json::json!({ "skipped": "no two keyframes see the same surface" }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controlnet_values_parse_from_the_right() {
        let c = parse_controlnet("depth=models/cn-depth").unwrap();
        assert_eq!((c.kind, c.weight, c.start, c.end), (ControlKind::Depth, 1.0, 0.0, 1.0));
        let c = parse_controlnet("canny=C:/models/cn:0.5").unwrap();
        assert_eq!((c.dir.to_str().unwrap(), c.weight), ("C:/models/cn", 0.5));
        let c = parse_controlnet("lineart=dir:0.8:0.1:0.9").unwrap();
        assert_eq!((c.weight, c.start, c.end), (0.8, 0.1, 0.9));
        assert!(parse_controlnet("depth").is_err());
        assert!(parse_controlnet("midas=dir").is_err());
        assert!(parse_controlnet("depth=dir:0.5:0.1").is_err());
        assert!(parse_controlnet("depth=:0.5").is_err());
        let l = parse_lora("style.safetensors:0.7").unwrap();
        assert_eq!((l.path.to_str().unwrap(), l.scale), ("style.safetensors", 0.7));
    }
}
