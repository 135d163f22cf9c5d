//! Background jobs: work that runs on its own thread while the caller (the
//! Blender add-on's modal timer, or the CLI's progress bar) polls it.
//!
//! The caller never blocks: it reads [`Job::status`], drains log lines with
//! [`Job::take_log`], asks for cancellation with [`Job::cancel`], and takes
//! the outcome once [`Job::is_done`]. The work function checks for
//! cancellation at safe points through its [`JobContext`]. A panic inside
//! the work is caught and reported as [`PipelineError::Internal`], so a bug
//! never takes the host process (Blender) down.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use serde_json::Value;

use crate::error::{PipelineError, Result};

/// What a job is doing now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobStatus {
    /// Name of the running stage.
    pub stage: String,
    /// Fraction done, 0..=1, for the whole job.
    pub progress: f32,
    /// One human-readable line: steps, time left.
    pub message: String,
}

struct Shared {
    status: Mutex<JobStatus>,
    cancel: AtomicBool,
    done: AtomicBool,
    outcome: Mutex<Option<Result<Value>>>,
    log: Sender<String>,
}

/// Handle given to the work function: reports progress and checks for cancellation.
pub struct JobContext {
    shared: Arc<Shared>,
    stage: Mutex<StageClock>,
}

/// The running stage's share of the whole job and when it started, for
/// mapping its steps onto the job's progress and estimating its time left.
struct StageClock {
    span: (f32, f32),
    started: Instant,
}

impl JobContext {
    /// Starts reporting a new stage, which covers `span` (from, to) of the whole job.
    pub fn set_stage(&self, stage: &str, span: (f32, f32)) {
        *self.stage.lock().unwrap() = StageClock { span, started: Instant::now() };
        let mut status = self.shared.status.lock().unwrap();
        status.stage = stage.to_string();
        status.message.clear();
        status.progress = span.0.clamp(0.0, 1.0);
        drop(status);
        self.log(format!("stage {stage}"));
    }

    /// Reports overall progress and a status line. `progress` is clamped to 0..=1.
    pub fn set_progress(&self, progress: f32, message: impl Into<String>) {
        let mut status = self.shared.status.lock().unwrap();
        status.progress = progress.clamp(0.0, 1.0);
        status.message = message.into();
    }

    /// Replaces the status line, keeping the progress.
    pub fn set_message(&self, message: impl Into<String>) {
        self.shared.status.lock().unwrap().message = message.into();
    }

    /// Reports `done` of `total` units of the part `[from, to]` of the
    /// current stage, with an estimate of the stage's time left.
    pub fn set_steps(&self, done: usize, total: usize, from: f32, to: f32, what: &str) {
        let fraction = if total == 0 { 1.0 } else { done as f32 / total as f32 };
        let (span, elapsed) = {
            let clock = self.stage.lock().unwrap();
            (clock.span, clock.started.elapsed().as_secs_f32())
        };
        let in_stage = from + (to - from) * fraction;
        let overall = span.0 + (span.1 - span.0) * in_stage;
        let left = if in_stage > 0.01 { elapsed * (1.0 - in_stage) / in_stage } else { f32::NAN };
        let eta = if left.is_finite() { format!(", about {} left", human_seconds(left)) } else { String::new() };
        self.set_progress(overall, format!("{what} {done}/{total}{eta}"));
    }

    /// Sends one line to the job's log.
    pub fn log(&self, line: impl Into<String>) {
        let _ = self.shared.log.send(line.into());
    }

    /// True once the user asked to cancel.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once the user asked to cancel: call at safe points.
    pub fn check_cancel(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(PipelineError::Cancelled)
        } else {
            Ok(())
        }
    }
}

fn human_seconds(s: f32) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min", s / 60.0)
    }
}

/// A running or finished background job.
pub struct Job {
    shared: Arc<Shared>,
    log: Receiver<String>,
    thread: Option<JoinHandle<()>>,
}

impl Job {
    /// Starts `work` on a new thread named `name`.
    pub fn spawn<F>(name: &str, work: F) -> Job
    where
        F: FnOnce(&JobContext) -> Result<Value> + Send + 'static,
    {
        let (tx, rx) = unbounded();
        let shared = Arc::new(Shared {
            status: Mutex::new(JobStatus { stage: name.to_string(), ..Default::default() }),
            cancel: AtomicBool::new(false),
            done: AtomicBool::new(false),
            outcome: Mutex::new(None),
            log: tx,
        });
        let ctx = JobContext {
            shared: shared.clone(),
            stage: Mutex::new(StageClock { span: (0.0, 1.0), started: Instant::now() }),
        };
        let thread = std::thread::Builder::new()
            .name(format!("splatdiff-{name}"))
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| work(&ctx))).unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(PipelineError::Internal(what))
                });
                if outcome.is_ok() {
                    ctx.set_progress(1.0, "finished");
                }
                *ctx.shared.outcome.lock().unwrap() = Some(outcome);
                ctx.shared.done.store(true, Ordering::Release);
            })
            .expect("the OS refused to start a thread");
        Job { shared, log: rx, thread: Some(thread) }
    }

    pub fn status(&self) -> JobStatus {
        self.shared.status.lock().unwrap().clone()
    }

    /// Asks the job to stop at its next safe point.
    pub fn cancel(&self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Log lines produced since the last call.
    pub fn take_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// The outcome, once done; `None` while running. Can be taken once.
    pub fn take_outcome(&mut self) -> Option<Result<Value>> {
        if !self.is_done() {
            return None;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.outcome.lock().unwrap().take()
    }

    /// Blocks until done and returns the outcome (for the CLI and tests).
    pub fn wait(mut self) -> Result<Value> {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared
            .outcome
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| Err(PipelineError::Internal("job outcome already taken".into())))
    }
}

impl Drop for Job {
    /// Dropping a running job cancels it and lets its thread finish on its own.
    fn drop(&mut self) {
        if self.thread.is_some() && !self.is_done() {
            self.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reports_progress_and_result() {
        let job = Job::spawn("t", |ctx| {
            ctx.set_stage("count", (0.0, 1.0));
            ctx.set_steps(1, 2, 0.0, 1.0, "step");
            ctx.log("hello");
            Ok(serde_json::json!({"ok": true}))
        });
        let out = job.wait().unwrap();
        assert_eq!(out["ok"], true);
    }

    #[test]
    fn cancel_stops_the_work_at_a_safe_point() {
        let mut job = Job::spawn("t", |ctx| loop {
            ctx.check_cancel()?;
            std::thread::sleep(Duration::from_millis(1));
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!job.is_done());
        job.cancel();
        while !job.is_done() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(matches!(job.take_outcome(), Some(Err(PipelineError::Cancelled))));
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let job = Job::spawn("t", |_| panic!("boom"));
        let err = job.wait().unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn log_lines_are_drained_once() {
        let mut job = Job::spawn("t", |ctx| {
            ctx.log("a");
            ctx.log("b");
            Ok(Value::Null)
        });
        while !job.is_done() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let log = job.take_log();
        assert!(log.ends_with(&["a".to_string(), "b".to_string()]), "{log:?}");
        assert!(job.take_log().is_empty());
        assert!(job.take_outcome().unwrap().is_ok());
    }
}
