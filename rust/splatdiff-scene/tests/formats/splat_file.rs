use splatdiff_scene::splat_file::{read_splat_file, write_splat_file};
use splatdiff_scene::GaussianSplats;

use crate::assert_error;

fn sample() -> GaussianSplats {
    GaussianSplats {
        positions: vec![[1.0, -2.0, 3.5], [0.0, 0.25, -1.0], [7.0, 8.0, 9.0]],
        sh_dc: vec![[0.0, 1.0, -1.0], [-1.5, 0.3, 1.7], [10.0, -10.0, 0.1]],
        sh_rest: vec![0.5; 27],
        sh_degree: 1,
        opacity: vec![0.0, 3.0, -2.0],
        scales: vec![[-3.0, -3.0, -3.0], [-1.0, -2.0, -0.5], [-4.0, -4.0, -4.0]],
        rotations: vec![[2.0, 0.0, 0.0, 0.0], [0.5, -0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]],
        extra: vec![],
    }
}

#[test]
fn round_trip_within_quantisation_sorted_by_visibility() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.splat");
    let splats = sample();
    write_splat_file(&path, &splats).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 96);
    let back = read_splat_file(&path).unwrap();
    assert_eq!(back.sh_degree, 0);
    back.validate().unwrap();
    // Largest volume × opacity first: splat 1, then 0, then 2.
    for (b, &a) in [1, 0, 2].iter().enumerate() {
        assert_eq!(back.positions[b], splats.positions[a]);
        for k in 0..3 {
            assert!((back.scales[b][k] - splats.scales[a][k]).abs() < 1e-5);
            let colour = |s: &GaussianSplats, i: usize| (0.5 + 0.282_094_8 * s.sh_dc[i][k]).clamp(0.0, 1.0);
            assert!((colour(&back, b) - colour(&splats, a)).abs() <= 0.5 / 255.0 + 1e-6);
        }
        let alpha = |o: f32| 1.0 / (1.0 + (-o).exp());
        assert!((alpha(back.opacity[b]) - alpha(splats.opacity[a])).abs() <= 0.5 / 255.0 + 1e-6);
    }
    let expected = [[0.5, -0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]];
    for (got, want) in back.rotations.iter().zip(expected) {
        for k in 0..4 {
            assert!((got[k] - want[k]).abs() <= 1.0 / 128.0, "{got:?} vs {want:?}");
        }
    }
}

#[test]
fn bad_sizes_and_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.splat");
    std::fs::write(&path, [0u8; 33]).unwrap();
    assert_error(read_splat_file(&path), &path, &["33 bytes", "multiple of the 32-byte"]);
    std::fs::write(&path, [0u8; 32]).unwrap();
    assert_error(read_splat_file(&path), &path, &["splat 0", "not finite and positive"]);
    let broken = GaussianSplats { opacity: vec![], ..sample() };
    assert_error(write_splat_file(&path, &broken), &path, &["opacity has 0 values"]);
}
