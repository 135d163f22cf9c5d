//! Times reading a 1,000,000-splat SH-degree-3 PLY file (62 float
//! properties, ~250 MB): `cargo run --release -p splatdiff-scene --example ply_bench`.

use std::time::Instant;

use splatdiff_scene::ply::{read_ply_table, sh_rest_count};
use splatdiff_scene::{read_splats, write_splats, GaussianSplats};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const N: usize = 1_000_000;
    // Deterministic, varied values; their distribution does not matter here.
    let value = |i: usize, k: usize| ((i * 31 + k * 7) % 1009) as f32 * 1e-3 - 0.5;
    let splats = GaussianSplats {
        positions: (0..N).map(|i| [value(i, 0), value(i, 1), value(i, 2)]).collect(),
        sh_dc: (0..N).map(|i| [value(i, 3), value(i, 4), value(i, 5)]).collect(),
        sh_rest: (0..N * sh_rest_count(3)).map(|j| value(j, 6)).collect(),
        sh_degree: 3,
        opacity: (0..N).map(|i| value(i, 7)).collect(),
        scales: (0..N).map(|i| [value(i, 8) - 4.0, value(i, 9) - 4.0, value(i, 10) - 4.0]).collect(),
        rotations: (0..N).map(|i| [1.0, value(i, 11), value(i, 12), value(i, 13)]).collect(),
        extra: Vec::new(),
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.ply");
    let start = Instant::now();
    write_splats(&path, &splats)?;
    let size = std::fs::metadata(&path)?.len();
    println!("write_splats:   {:.3} s ({:.0} MB)", start.elapsed().as_secs_f64(), size as f64 / 1e6);

    let bytes = best_of_three("std::fs::read (I/O floor)", || std::fs::read(&path))?;
    assert_eq!(bytes.len() as u64, size);
    let table = best_of_three("read_ply_table", || read_ply_table(&path))?;
    assert_eq!(table.count, N);
    let back = best_of_three("read_splats", || read_splats(&path))?;
    assert_eq!(back.len(), N);
    Ok(())
}

/// Runs `f` three times and prints the best time, so that the figure is not
/// the page cache warming up; returns the last result.
fn best_of_three<T>(label: &str, f: impl Fn() -> T) -> T {
    let mut best = f64::INFINITY;
    let mut result = None;
    for _ in 0..3 {
        drop(result.take());
        let start = Instant::now();
        result = Some(f());
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("{label}: {best:.3} s");
    result.expect("three runs")
}
