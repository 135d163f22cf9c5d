//! `splatdiff propagate` and `splatdiff exemplar`: the propagation stage and
//! the exemplar stylizer from the command line.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use splatdiff_propagate::exemplar::{stylize_render, stylize_with_guides, ExemplarConfig};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::{read_capture, read_keyframes, write_frames};
use splatdiff_propagate::patchmatch::Guide;
use splatdiff_propagate::propagate::evenly_spaced_keys;
use splatdiff_propagate::{propagate, Method, PropagateConfig};

#[derive(Args)]
pub struct PropagateArgs {
    /// The capture: a folder with transforms.json (cameras, depth, normals, masks).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder of restyled keyframes, named like the capture's frames (r_008.png).
    #[arg(long)]
    pub keys: PathBuf,
    /// Output folder: images/, error/, transforms.json, propagate.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Settings as JSON (see splatdiff_propagate::PropagateConfig); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `geometry` (default) or `patch` (EbSynth's workflow, no geometry).
    #[arg(long)]
    pub method: Option<String>,
}

pub fn run_propagate(args: PropagateArgs) -> Result<()> {
    let mut config: PropagateConfig = match &args.config {
        Some(p) => crate::train::read_json(p)?,
        None => PropagateConfig::default(),
    };
    match args.method.as_deref() {
        None => {}
        Some("geometry") => config.method = Method::Geometry,
        Some("patch") => config.method = Method::Patch,
        Some(other) => bail!("--method {other}: expected geometry or patch"),
    }
    let capture = read_capture(&args.data)?;
    let keys = read_keyframes(&args.keys, &capture)?;
    for w in &capture.warnings {
        eprintln!("warning: {w}");
    }
    let bar = ProgressBar::new(capture.frames.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("propagate [{bar:40}] {pos}/{len} frames, {eta} left").expect("valid template"),
    );
    let start = Instant::now();
    let (frames, warnings) =
        propagate(&capture.frames, &keys, &config, &|done, _| bar.set_position(done as u64), &AtomicBool::new(false))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    write_frames(&args.out, &capture, &frames)?;
    let report = serde_json::json!({
        "config": config,
        "keyframes": keys.iter().map(|k| capture.dataset.frames[k.index].name.clone()).collect::<Vec<_>>(),
        "warnings": warnings,
        "seconds": seconds,
        "frames": capture.dataset.frames.iter().zip(&frames).map(|(f, p)| serde_json::json!({
            "name": f.name,
            "coverage": p.coverage,
            "mean_error": mean_object_error(p),
        })).collect::<Vec<_>>(),
    });
    splatdiff_scene::atomic::write_bytes_atomic(
        &args.out.join("propagate.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    println!(
        "propagated {} keyframes to {} frames in {seconds:.1} s ({:.2} s per frame) into {}",
        keys.len(),
        frames.len(),
        seconds / frames.len() as f64,
        args.out.display()
    );
    Ok(())
}

fn mean_object_error(p: &splatdiff_propagate::PropagatedFrame) -> f32 {
    let (mut sum, mut n) = (0.0, 0);
    for (i, e) in p.error.iter().enumerate() {
        if p.image.data[i * 4 + 3] > 0.5 {
            sum += e;
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

#[derive(Args)]
pub struct ExemplarArgs {
    /// The style image (its alpha, if any, marks the usable part).
    #[arg(long)]
    pub style: PathBuf,
    /// Output: a PNG (single image) or, with --data, a folder of keyframes.
    #[arg(long)]
    pub out: PathBuf,
    /// Restyle this render (RGB or RGBA; alpha = object) with the style.
    #[arg(long, conflicts_with_all = ["data", "guide"])]
    pub render: Option<PathBuf>,
    /// Restyle keyframes of this capture (evenly spaced, --keyframes of them).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How many keyframes to restyle with --data.
    #[arg(long, default_value_t = 8)]
    pub keyframes: usize,
    /// An explicit guide pair with its weight: SOURCE TARGET WEIGHT (repeatable),
    /// as in EbSynth's `-guide source target -weight w`.
    #[arg(long, num_args = 3, value_names = ["SOURCE", "TARGET", "WEIGHT"])]
    pub guide: Vec<String>,
    /// Patch size (odd).
    #[arg(long)]
    pub patch_size: Option<usize>,
    /// Uniformity weight.
    #[arg(long)]
    pub uniformity: Option<f32>,
}

pub fn run_exemplar(args: ExemplarArgs) -> Result<()> {
    let style = Image::read(&args.style)?;
    let mut config = ExemplarConfig::default();
    if let Some(p) = args.patch_size {
        config.synthesis.patch_size = p;
    }
    if let Some(u) = args.uniformity {
        config.synthesis.uniformity = u;
    }
    let start = Instant::now();
    if !args.guide.is_empty() {
        let mut guides = Vec::new();
        for triple in args.guide.chunks(3) {
            let weight: f32 =
                triple[2].parse().with_context(|| format!("--guide weight {:?} is not a number", triple[2]))?;
            let (source, target) = (Image::read(Path::new(&triple[0]))?, Image::read(Path::new(&triple[1]))?);
            guides.push(Guide { source, target, weight });
        }
        let out = stylize_with_guides(&style, &guides, &config.synthesis)?;
        out.image.write_png(&args.out)?;
    } else if let Some(render) = &args.render {
        let render = Image::read(render)?;
        let mask: Vec<f32> = if render.channels == 4 {
            render.data.chunks_exact(4).map(|p| p[3]).collect()
        } else {
            vec![1.0; render.width * render.height]
        };
        stylize_render(&style, &render, &mask, &config)?.write_png(&args.out)?;
    } else if let Some(data) = &args.data {
        let capture = read_capture(data)?;
        std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
        let indices = evenly_spaced_keys(capture.frames.len(), args.keyframes);
        let bar = ProgressBar::new(indices.len() as u64);
        for &i in &indices {
            let f = &capture.frames[i];
            let out = stylize_render(&style, &f.render, &f.geometry.mask, &config)?;
            out.write_png(&args.out.join(format!("{}.png", capture.dataset.frames[i].name)))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
    } else {
        bail!("give --render, --data or at least one --guide");
    }
    println!("stylized in {:.1} s into {}", start.elapsed().as_secs_f64(), args.out.display());
    Ok(())
}
