//! Exemplar stylization on EbSynth's own single-frame examples (from
//! `../shared/data/ebsynth_examples`; skipped with a message when absent),
//! and determinism of the synthesis.

use std::path::PathBuf;

use splatdiff_propagate::exemplar::{stylize_render, stylize_with_guides, ExemplarConfig};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::patchmatch::{synthesize, Constraints, Guide, SynthesisConfig};

fn examples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ebsynth_examples");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: {} is absent (shared data not available)", dir.display());
        None
    }
}

/// Half-size copy, to keep the test quick.
fn load(dir: &PathBuf, name: &str) -> Image {
    Image::read(&dir.join(name)).unwrap().downsample()
}

/// Fraction of target pixels whose segmentation colour equals the colour
/// of the source pixel their patch was copied from.
fn segment_agreement(nnf: &[[u32; 2]], src_seg: &Image, tgt_seg: &Image) -> f64 {
    let mut same = 0usize;
    for (t, q) in nnf.iter().enumerate() {
        let a = tgt_seg.pixel(t % tgt_seg.width, t / tgt_seg.width);
        let b = src_seg.pixel(q[0] as usize, q[1] as usize);
        if a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.1) {
            same += 1;
        }
    }
    same as f64 / nnf.len() as f64
}

#[test]
fn facestyle_copies_patches_from_the_matching_face_region() {
    let Some(dir) = examples() else { return };
    let d = dir.join("facestyle");
    let style = load(&d, "source_painting.png");
    let seg = (load(&d, "source_Gseg.png"), load(&d, "target_Gseg.png"));
    // EbSynth's example command: Gapp 0.5, Gseg 1.5, Gpos 1.5.
    let guides = vec![
        Guide { source: load(&d, "source_Gapp.png"), target: load(&d, "target_Gapp.png"), weight: 0.5 },
        Guide { source: seg.0.clone(), target: seg.1.clone(), weight: 1.5 },
        Guide { source: load(&d, "source_Gpos.png"), target: load(&d, "target_Gpos.png"), weight: 1.5 },
    ];
    let out = stylize_with_guides(&style, &guides, &SynthesisConfig::default()).unwrap();
    let agree = segment_agreement(&out.nnf, &seg.0, &seg.1);
    println!("facestyle: {:.1}% of pixels copy from the same face region", 100.0 * agree);
    assert!(agree > 0.9, "only {:.1}% of pixels copy from the matching region", 100.0 * agree);
    let out_path = std::env::temp_dir().join("splatdiff_facestyle.png");
    out.image.write_png(&out_path).unwrap();
    // Colours come from the painting: the mean colour is close to the style's.
    let mean = |img: &Image| -> Vec<f32> {
        (0..3)
            .map(|c| img.data.iter().skip(c).step_by(img.channels).sum::<f32>() / (img.width * img.height) as f32)
            .collect()
    };
    let (ms, mo) = (mean(&style), mean(&out.image));
    assert!(ms.iter().zip(&mo).all(|(a, b)| (a - b).abs() < 0.1), "style {ms:?} vs output {mo:?}");
}

#[test]
fn stylit_follows_the_lighting_guides() {
    let Some(dir) = examples() else { return };
    let d = dir.join("stylit");
    let style = load(&d, "source_style.png");
    let names = ["fullgi", "dirdif", "indirb"];
    let guides: Vec<Guide> = names
        .iter()
        .map(|n| Guide {
            source: load(&d, &format!("source_{n}.png")),
            target: load(&d, &format!("target_{n}.png")),
            weight: 0.66,
        })
        .collect();
    let out = stylize_with_guides(&style, &guides, &SynthesisConfig::default()).unwrap();
    // The full-GI guide at matched positions agrees with the target's far
    // better than at random positions would.
    let (gs, gt) = (&guides[0].source, &guides[0].target);
    let err = |pos: &dyn Fn(usize) -> (usize, usize)| -> f64 {
        let mut sum = 0.0;
        for t in 0..gt.width * gt.height {
            let (qx, qy) = pos(t);
            let (a, b) = (gt.pixel(t % gt.width, t / gt.width), gs.pixel(qx, qy));
            sum += a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>();
        }
        sum / (gt.width * gt.height * 3) as f64
    };
    let matched = err(&|t| (out.nnf[t][0] as usize, out.nnf[t][1] as usize));
    let shuffled = err(&|t| {
        let s = (t * 7919) % (gs.width * gs.height);
        (s % gs.width, s / gs.width)
    });
    println!("stylit: guide error {matched:.4} at matched patches, {shuffled:.4} at random ones");
    assert!(matched < 0.25 * shuffled);
}

#[test]
fn render_restyled_by_a_style_image_keeps_the_mask() {
    let Some(dir) = examples() else { return };
    let style = load(&dir.join("stylit"), "source_style.png");
    let render = load(&dir.join("stylit"), "target_fullgi.png");
    let mask: Vec<f32> =
        (0..render.width * render.height).map(|i| ((i % render.width) < render.width / 2) as u8 as f32).collect();
    let out = stylize_render(&style, &render, &mask, &ExemplarConfig::default()).unwrap();
    assert_eq!(out.channels, 4);
    for (i, m) in mask.iter().enumerate() {
        assert_eq!(out.data[i * 4 + 3], *m);
    }
}

#[test]
fn synthesis_is_identical_whatever_the_thread_count() {
    let mut style = Image::new(64, 48, 3);
    let mut guide_s = Image::new(64, 48, 1);
    let mut guide_t = Image::new(56, 40, 1);
    for (i, v) in style.data.iter_mut().enumerate() {
        *v = ((i * 31) % 97) as f32 / 97.0;
    }
    for (i, v) in guide_s.data.iter_mut().enumerate() {
        *v = ((i % 64) as f32 / 64.0 + ((i / 64) as f32 / 48.0).powi(2)) * 0.5;
    }
    for (i, v) in guide_t.data.iter_mut().enumerate() {
        *v = (((i % 56) as f32 / 56.0).powi(2) + (i / 56) as f32 / 40.0) * 0.5;
    }
    let guides = [Guide { source: guide_s, target: guide_t, weight: 1.0 }];
    let go = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| synthesize(&style, &guides, &Constraints::default(), &SynthesisConfig::default()).unwrap())
    };
    let one = go(1);
    for threads in [2, 4] {
        let other = go(threads);
        assert_eq!(one.nnf, other.nnf, "{threads} threads give another field");
        assert!(one.image.data.iter().zip(&other.image.data).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
