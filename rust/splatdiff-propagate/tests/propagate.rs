//! Propagation on a synthetic turntable with exact ground truth.

mod common;

use std::sync::atomic::AtomicBool;

use splatdiff_propagate::image::Image;
use splatdiff_propagate::metrics::{psnr_masked, warp_error};
use splatdiff_propagate::propagate::{propagate, Keyframe, Method, PropagateConfig, PropagatedFrame};

fn run(t: &common::Turntable, keys: &[Keyframe], config: &PropagateConfig) -> Vec<PropagatedFrame> {
    let (out, _) = propagate(&t.frames, keys, config, &|_, _| {}, &AtomicBool::new(false)).unwrap();
    out
}

fn mean_psnr(t: &common::Turntable, out: &[PropagatedFrame], keys: &[usize]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for (i, o) in out.iter().enumerate() {
        if !keys.contains(&i) {
            sum += psnr_masked(&o.image, &t.truth[i], &t.frames[i].geometry.mask);
            n += 1;
        }
    }
    sum / n as f64
}

#[test]
fn geometry_propagation_recovers_the_ground_truth() {
    let t = common::turntable(12, 64);
    let key_idx = [0, 3, 6, 9];
    let keys = common::keys_from_truth(&t, &key_idx);
    let out = run(&t, &keys, &PropagateConfig::default());
    let psnr = mean_psnr(&t, &out, &key_idx);
    println!("geometry method: mean PSNR {psnr:.2} dB on non-key frames");
    assert!(psnr > 28.0, "PSNR {psnr:.2} dB below the 28 dB threshold");
    // Keyframes come back unchanged.
    for &k in &key_idx {
        assert!(psnr_masked(&out[k].image, &t.truth[k], &t.frames[k].geometry.mask) > 60.0);
    }
    // Background stays transparent; object pixels opaque.
    for (o, f) in out.iter().zip(&t.frames) {
        for (i, m) in f.geometry.mask.iter().enumerate() {
            assert_eq!(o.image.data[i * 4 + 3], *m);
        }
    }
}

#[test]
fn geometry_beats_the_patch_baseline_in_quality_and_stability() {
    let t = common::turntable(8, 48);
    let key_idx = [0, 4];
    let keys = common::keys_from_truth(&t, &key_idx);
    let geo = run(&t, &keys, &PropagateConfig::default());
    let patch = run(&t, &keys, &PropagateConfig { method: Method::Patch, ..Default::default() });
    let (pg, pp) = (mean_psnr(&t, &geo, &key_idx), mean_psnr(&t, &patch, &key_idx));
    let stability = |out: &[PropagatedFrame]| -> f64 {
        (1..out.len())
            .map(|i| warp_error(&t.frames[i - 1].geometry, &out[i - 1].image, &t.frames[i].geometry, &out[i].image).0)
            .sum::<f64>()
            / (out.len() - 1) as f64
    };
    let (sg, sp) = (stability(&geo), stability(&patch));
    println!("PSNR geometry {pg:.2} dB, patch {pp:.2} dB; warp error geometry {sg:.4}, patch {sp:.4}");
    assert!(pg > pp + 3.0, "geometry {pg:.2} dB is not clearly above patch {pp:.2} dB");
    assert!(sg < sp, "geometry warp error {sg:.4} not below patch {sp:.4}");
}

#[test]
fn output_is_identical_whatever_the_thread_count() {
    let t = common::turntable(6, 48);
    // Two keys leave pixels no key sees, so patch synthesis runs too.
    let keys = common::keys_from_truth(&t, &[0, 3]);
    let config = PropagateConfig::default();
    let in_pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| run(&t, &keys, &config))
    };
    let one = in_pool(1);
    assert!(one.iter().any(|o| o.coverage < 1.0), "the case should include unseen pixels");
    for threads in [2, 3, 5] {
        let other = in_pool(threads);
        for (a, b) in one.iter().zip(&other) {
            assert!(
                a.image.data.iter().zip(&b.image.data).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{threads} threads differ"
            );
            assert!(a.error.iter().zip(&b.error).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}

#[test]
fn keyframes_that_disagree_blend_without_a_seam() {
    // Two keyframes in flat, different colours: a frame between them sees
    // the surface from both. The result changes smoothly across the object
    // (no jump where the preferred keyframe changes), except across
    // occluding edges, where two surfaces meet.
    let t = common::turntable(8, 64);
    let flat = |idx: usize, c: [f32; 3]| {
        let mut img = Image::new(64, 64, 4);
        for (i, m) in t.frames[idx].geometry.mask.iter().enumerate() {
            if *m > 0.5 {
                img.data[i * 4..i * 4 + 4].copy_from_slice(&[c[0], c[1], c[2], 1.0]);
            }
        }
        Keyframe { index: idx, image: img }
    };
    let keys = vec![flat(0, [0.9, 0.1, 0.1]), flat(2, [0.1, 0.1, 0.9])];
    let mask = &t.frames[1].geometry.mask;
    let depth = t.frames[1].geometry.depth.as_ref().unwrap();
    let largest_step = |f: &PropagatedFrame| {
        let mut max_step = 0.0f32;
        for y in 0..64 {
            for x in 0..63 {
                let (i, j) = (y * 64 + x, y * 64 + x + 1);
                // Same surface (no occluding edge between the two pixels).
                if mask[i] > 0.5 && mask[j] > 0.5 && (depth[i] - depth[j]).abs() < 0.01 * depth[i] {
                    max_step = max_step.max((f.image.data[i * 4] - f.image.data[j * 4]).abs());
                }
            }
        }
        max_step
    };
    let out = run(&t, &keys, &PropagateConfig::default());
    let plain = run(&t, &keys, &PropagateConfig { gradient_domain: false, ..Default::default() });
    let f = &out[1];
    let (step, plain_step) = (largest_step(f), largest_step(&plain[1]));
    println!("largest step between neighbours: {step:.3} (plain blend: {plain_step:.3})");
    assert!(step < 0.25, "a seam of {step:.3} between neighbours");
    assert!(step < 0.5 * plain_step, "gradient-domain blending should at least halve the plain blend's seams");
    // The disagreement shows in the error map.
    let mean_err: f32 = f.error.iter().zip(mask).filter(|(_, m)| **m > 0.5).map(|(e, _)| *e).sum::<f32>()
        / mask.iter().filter(|m| **m > 0.5).count() as f32;
    assert!(mean_err > 0.05, "disagreeing keyframes should raise the error map, got {mean_err}");
}

#[test]
fn error_map_is_low_where_keyframes_agree_and_high_where_they_do_not() {
    let t = common::turntable(8, 48);
    let mut keys = common::keys_from_truth(&t, &[0, 2]);
    let agree = run(&t, &keys, &PropagateConfig::default());
    // Corrupt one keyframe: invert its colours.
    for v in keys[1].image.data.chunks_exact_mut(4) {
        for c in &mut v[..3] {
            *c = 1.0 - *c;
        }
    }
    let disagree = run(&t, &keys, &PropagateConfig::default());
    let mean =
        |o: &PropagatedFrame| o.error.iter().sum::<f32>() / o.error.iter().filter(|e| **e > 0.0).count().max(1) as f32;
    let (a, d) = (mean(&agree[1]), mean(&disagree[1]));
    println!("mean error where keys agree {a:.4}, disagree {d:.4}");
    assert!(d > 3.0 * a, "error map does not tell disagreement apart ({a:.4} vs {d:.4})");
}
