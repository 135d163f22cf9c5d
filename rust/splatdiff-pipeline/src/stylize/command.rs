//! Keyframes restyled by an external program run once per keyframe (face
//! swappers, other diffusion front ends, in-house tools).
//!
//! The command is a shell command line with placeholders: `{in}` and `{out}`
//! (the input and output image paths, shell-quoted), `{prompt}`, `{seed}`,
//! `{strength}` and `{frame}`. It runs with a time limit; a non-zero exit,
//! a missing or resized output or the time limit is an error that names the
//! keyframe and quotes the end of the program's output.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{KeyInput, StylizeContext, Stylized, Stylizer};
use crate::error::{PipelineError, Result};

/// Settings of the command stylizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandConfig {
    pub command: String,
    /// Seconds one keyframe may take before the program is stopped.
    pub timeout_s: f64,
    pub prompt: String,
    pub seed: u64,
    pub strength: f64,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self { command: String::new(), timeout_s: 600.0, prompt: String::new(), seed: 0, strength: 0.6 }
    }
}

impl CommandConfig {
    pub fn validate(&self) -> Result<()> {
        if self.command.trim().is_empty() {
            return Err(PipelineError::invalid("stylize", "no command given for the command stylizer"));
        }
        if !self.command.contains("{out}") {
            return Err(PipelineError::invalid(
                "stylize",
                format!("the command {:?} has no {{out}} placeholder for the image it writes", self.command),
            ));
        }
        if self.timeout_s.is_nan() || self.timeout_s <= 0.0 {
            return Err(PipelineError::invalid("stylize", format!("timeout_s {} must be positive", self.timeout_s)));
        }
        Ok(())
    }
}

/// `s` quoted for the platform's shell.
fn shell_quote(s: &str) -> String {
    if cfg!(windows) {
        format!("\"{}\"", s.replace('"', "\\\""))
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line for one keyframe.
pub fn expand(
    template: &str,
    input: &Path,
    output: &Path,
    config: &CommandConfig,
    strength: f64,
    frame: &str,
) -> String {
    template
        .replace("{in}", &shell_quote(&input.to_string_lossy()))
        .replace("{out}", &shell_quote(&output.to_string_lossy()))
        .replace("{prompt}", &shell_quote(&config.prompt))
        .replace("{seed}", &config.seed.to_string())
        .replace("{strength}", &format!("{strength}"))
        .replace("{frame}", &shell_quote(frame))
}

fn shell(line: &str) -> Command {
    if cfg!(windows) {
        let mut c = Command::new("cmd");
        c.args(["/C", line]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", line]);
        c
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Stops the program and everything it started.
fn kill_tree(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct CommandStylizer {
    pub config: CommandConfig,
}

impl Stylizer for CommandStylizer {
    fn stylize(&self, keys: &[KeyInput], ctx: &StylizeContext) -> Result<Stylized> {
        self.config.validate()?;
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            ctx.job.set_steps(i, keys.len(), 0.0, 1.0, "keyframe");
            let input = ctx.scratch.join(format!("{}.in.png", key.name));
            let output = ctx.scratch.join(format!("{}.png", key.name));
            let log = ctx.scratch.join(format!("{}.log", key.name));
            key.image.write_png(&input)?;
            let line = expand(&self.config.command, &input, &output, &self.config, ctx.strength, key.name);
            ctx.job.log(format!("command: {line}"));
            let log_file = std::fs::File::create(&log).map_err(|e| PipelineError::io(&log, e))?;
            let mut cmd = shell(&line);
            cmd.stdin(Stdio::null())
                .stdout(log_file.try_clone().map_err(|e| PipelineError::io(&log, e))?)
                .stderr(log_file);
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd
                .spawn()
                .map_err(|e| PipelineError::invalid("stylize", format!("cannot start the command {line:?}: {e}")))?;
            let started = Instant::now();
            let limit = Duration::from_secs_f64(self.config.timeout_s);
            let status = loop {
                if let Some(status) = child.try_wait().map_err(|e| PipelineError::invalid("stylize", e.to_string()))? {
                    break status;
                }
                if ctx.job.is_cancelled() {
                    kill_tree(&mut child);
                    return Err(PipelineError::Cancelled);
                }
                if started.elapsed() > limit {
                    kill_tree(&mut child);
                    return Err(PipelineError::invalid(
                        "stylize",
                        format!(
                            "the command timed out after {} s on keyframe {} and was stopped: {line}",
                            self.config.timeout_s, key.name
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if !status.success() {
                return Err(PipelineError::invalid(
                    "stylize",
                    format!(
                        "the command failed ({status}) on keyframe {}: {line}; its output: {}",
                        key.name,
                        tail(&log)
                    ),
                ));
            }
            if !output.is_file() {
                return Err(PipelineError::invalid(
                    &output,
                    format!("the command wrote no image for keyframe {}: {line}", key.name),
                ));
            }
            out.push(key.read_restyled(&output, "the command's image")?);
        }
        Ok(Stylized::Images(out))
    }
}
