//! A work folder whose finished capture is propagate's synthetic turntable
//! (exact depth, masks and two looks on one surface).

#![allow(dead_code)]

#[path = "../../../splatdiff-propagate/tests/common/mod.rs"]
pub mod common;

use std::path::Path;

use serde_json::json;
use splatdiff_pipeline::WorkDir;

/// True when a GPU adapter (lavapipe will do) is there for the train stage;
/// otherwise says why the test is skipped.
pub fn gpu_or_skip() -> bool {
    match splatdiff_render::gpu::GpuContext::new() {
        Ok(_) => true,
        Err(e) => {
            println!("skipping: no GPU adapter for the train stage ({e})");
            false
        }
    }
}

/// `frames` views of `size` pixels captured into `root/run`; returns the work folder and the truth.
pub fn work_with_capture(root: &Path, frames: usize, size: u32) -> (WorkDir, common::Turntable) {
    let t = common::turntable(frames, size);
    let work = WorkDir::open(root.join("run")).unwrap();
    let staging = work.begin("capture", &json!({ "synthetic": frames, "size": size })).unwrap();
    common::write_capture(&t, &staging, &root.join("unused-keys"), &[]);
    work.commit("capture", json!({})).unwrap();
    (work, t)
}
