//! Bad input gets clear errors or documented fallbacks, never a panic.

mod common;

use std::sync::atomic::AtomicBool;

use splatdiff_propagate::image::Image;
use splatdiff_propagate::propagate::{propagate, Keyframe, PropagateConfig};

fn go(t: &common::Turntable, keys: &[Keyframe]) -> Result<Vec<String>, String> {
    propagate(&t.frames, keys, &PropagateConfig::default(), &|_, _| {}, &AtomicBool::new(false))
        .map(|(_, w)| w)
        .map_err(|e| e.to_string())
}

#[test]
fn keyframe_of_another_size_is_refused() {
    let t = common::turntable(4, 32);
    let e = go(&t, &[Keyframe { index: 0, image: Image::new(16, 32, 4) }]).unwrap_err();
    assert!(e.contains("keyframe 0 is 16x32, the frames are 32x32"), "{e}");
}

#[test]
fn keyframe_index_out_of_range_is_refused() {
    let t = common::turntable(4, 32);
    let e = go(&t, &[Keyframe { index: 7, image: t.truth[0].clone() }]).unwrap_err();
    assert!(e.contains("keyframe index 7 is out of range") && e.contains("4 frames"), "{e}");
}

#[test]
fn missing_depth_falls_back_to_patches_and_says_so() {
    let mut t = common::turntable(4, 32);
    t.frames[2].geometry.depth = None;
    let keys = common::keys_from_truth(&t, &[0]);
    let warnings = go(&t, &keys).unwrap();
    assert!(warnings.iter().any(|w| w.contains("no depth") && w.contains("patch synthesis")), "{warnings:?}");
}

#[test]
fn all_transparent_frame_gives_an_empty_frame() {
    let mut t = common::turntable(4, 32);
    t.frames[1].geometry.mask = vec![0.0; 32 * 32];
    let keys = common::keys_from_truth(&t, &[0]);
    let (out, _) =
        propagate(&t.frames, &keys, &PropagateConfig::default(), &|_, _| {}, &AtomicBool::new(false)).unwrap();
    assert!(out[1].image.data.iter().all(|v| *v == 0.0));
}

#[test]
fn nan_depth_is_treated_as_no_object() {
    let mut t = common::turntable(4, 32);
    for d in t.frames[1].geometry.depth.as_mut().unwrap().iter_mut().step_by(3) {
        *d = f32::NAN;
    }
    let keys = common::keys_from_truth(&t, &[0, 2]);
    let (out, _) =
        propagate(&t.frames, &keys, &PropagateConfig::default(), &|_, _| {}, &AtomicBool::new(false)).unwrap();
    assert!(out[1].image.data.iter().all(|v| v.is_finite()));
}

#[test]
fn cancel_stops_between_frames() {
    let t = common::turntable(4, 32);
    let keys = common::keys_from_truth(&t, &[0]);
    let e = propagate(&t.frames, &keys, &PropagateConfig::default(), &|_, _| {}, &AtomicBool::new(true)).unwrap_err();
    assert_eq!(e.to_string(), "cancelled");
}
