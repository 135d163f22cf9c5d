//! `splatdiff`: the command-line face of the pipeline, for pipeline
//! engineers and scripted runs. The Blender add-on and this tool share the
//! same work folders and manifests.

mod diffuse;
mod propagate;
mod run;
mod train;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use splatdiff_pipeline::{Job, WorkDir};
use splatdiff_scene::ply::{read_splats, write_splats};
use splatdiff_scene::splat_file::write_splat_file;
use splatdiff_scene::transforms::read_transforms;
use train::TrainArgs;

#[derive(Parser)]
#[command(
    name = "splatdiff",
    version,
    about = "Restyle a 3D object by text prompt and bring it back as Gaussian splats"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the loop after capture: keyframes restyled, propagated, splats
    /// trained and rendered, for N iterations, then the report. Finished
    /// stages are reused, so running again resumes.
    Run(run::RunArgs),
    /// Train Gaussian splats on posed images (a NeRF/instant-ngp transforms.json).
    Train {
        /// A transforms.json, or a folder holding transforms_train.json or transforms.json.
        #[arg(long)]
        data: PathBuf,
        /// Optimisation steps.
        #[arg(long, default_value_t = 3000)]
        steps: u64,
        /// Where to write the trained model (3DGS PLY).
        #[arg(long)]
        out: PathBuf,
        /// Longer side of the training images (downscaled to it).
        #[arg(long)]
        max_side: Option<u32>,
        /// Cap on the number of splats.
        #[arg(long)]
        max_splats: Option<usize>,
        /// Initial splats from a PLY. Default: the frames' depth back-projected
        /// when they have depth maps, else random points around the cameras' target.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Training settings as JSON (see splatdiff_train::TrainConfig); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Checkpoint folder (default: OUT.checkpoint); a run resumes from it.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Render a splat model at the cameras of a transforms.json into RGBA PNGs, depth EXRs and a transforms.json.
    Render {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        cameras: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Longer side of the rendered images (default: the cameras' own size).
        #[arg(long)]
        max_side: Option<u32>,
    },
    /// Restyle keyframe images by text prompt with Stable Diffusion img2img
    /// and ControlNets (SD 1.x / 2.x weights, natively on the CPU).
    Diffuse(Box<diffuse::DiffuseArgs>),
    /// Carry restyled keyframes' look to every frame of a capture.
    Propagate(propagate::PropagateArgs),
    /// Restyle an image or a capture's keyframes with a style image (no model needed).
    Exemplar(propagate::ExemplarArgs),
    /// Print what a splat PLY, a transforms.json or a work folder holds.
    Info { path: PathBuf },
    /// Convert a splat file: `.ply` to `.ply` (standard layout) or `.splat`.
    Convert { input: PathBuf, output: PathBuf },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli.command) {
        eprintln!("splatdiff: error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Train { data, steps, out, max_side, max_splats, init, config, checkpoint } => {
            let checkpoint = checkpoint.unwrap_or_else(|| out.with_extension("checkpoint"));
            let args = TrainArgs { data, steps, out, max_side, max_splats, init, config, checkpoint };
            train::train(args)
        }
        Command::Render { model, cameras, out, max_side } => train::render(&model, &cameras, &out, max_side),
        Command::Diffuse(args) => diffuse::run_diffuse(*args),
        Command::Propagate(args) => propagate::run_propagate(args),
        Command::Exemplar(args) => propagate::run_exemplar(args),
        Command::Info { path } => info(&path),
        Command::Convert { input, output } => convert(&input, &output),
    }
}

fn info(path: &Path) -> Result<()> {
    if path.is_dir() {
        let manifest = WorkDir::open(path)?.manifest()?;
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    match extension(path).as_str() {
        "ply" => {
            let splats = read_splats(path)?;
            let (mut lo, mut hi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
            for p in &splats.positions {
                for k in 0..3 {
                    lo[k] = lo[k].min(p[k]);
                    hi[k] = hi[k].max(p[k]);
                }
            }
            println!("{}: {} splats, SH degree {}", path.display(), splats.len(), splats.sh_degree);
            println!("bounds: {lo:?} .. {hi:?}");
            for (name, _) in &splats.extra {
                println!("extra property: {name}");
            }
        }
        "json" => {
            let dataset = read_transforms(path)?;
            for warning in &dataset.warnings {
                eprintln!("warning: {warning}");
            }
            let first = &dataset.frames[0].camera.intrinsics;
            println!(
                "{}: {} frames, {}x{}, fx {:.2} fy {:.2} cx {:.2} cy {:.2}",
                path.display(),
                dataset.frames.len(),
                first.width,
                first.height,
                first.fx,
                first.fy,
                first.cx,
                first.cy
            );
            let with_depth = dataset.frames.iter().filter(|f| f.depth_path.is_some()).count();
            println!("frames with depth: {with_depth}");
        }
        other => {
            bail!("{}: cannot tell what a '.{other}' file is (expected .ply, .json or a work folder)", path.display())
        }
    }
    Ok(())
}

fn convert(input: &Path, output: &Path) -> Result<()> {
    let splats = read_splats(input)?;
    match extension(output).as_str() {
        "ply" => write_splats(output, &splats)?,
        "splat" => write_splat_file(output, &splats)?,
        other => bail!("{}: unknown output format '.{other}' (expected .ply or .splat)", output.display()),
    }
    println!("wrote {} splats to {}", splats.len(), output.display());
    Ok(())
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default()
}

/// Shows a job's progress as a bar and its log above it until it ends.
pub(crate) fn follow(mut job: Job) -> splatdiff_pipeline::Result<serde_json::Value> {
    let bar = ProgressBar::new(1000);
    bar.set_style(ProgressStyle::with_template("{prefix:>10} [{bar:40}] {percent:>3}% {msg}").expect("valid template"));
    let outcome = loop {
        for line in job.take_log() {
            bar.println(line);
        }
        let status = job.status();
        bar.set_prefix(status.stage);
        bar.set_position((status.progress * 1000.0) as u64);
        bar.set_message(status.message);
        if let Some(outcome) = job.take_outcome() {
            break outcome;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for line in job.take_log() {
        bar.println(line);
    }
    bar.finish_and_clear();
    outcome
}
