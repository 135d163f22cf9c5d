//! Gradient-domain blending: a screened Poisson solve over the object's
//! pixels. The result follows a target gradient field (the weighted blend
//! of each keyframe's own gradients, so no seam appears where the choice of
//! keyframe changes) and is pulled softly towards target values (so low
//! frequencies stay where the keyframes put them).
//!
//! Minimises  Σ_edges (u_q − u_p − g_pq)² + Σ_p λ_p (u_p − d_p)²  over the
//! pixels with `active`, edges between active 4-neighbours only (the
//! silhouette is a free boundary). Solved per channel by conjugate gradient
//! with a Jacobi preconditioner, started from `d`. Every reduction sums
//! fixed chunks in a fixed order, so the result does not depend on the
//! number of threads.

use rayon::prelude::*;

/// The blending problem for one channel-interleaved image.
pub struct PoissonProblem<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub active: &'a [bool],
    /// Target values `d`, interleaved.
    pub data: &'a [f32],
    /// Per pixel data weight λ (0 lets the pixel float freely).
    pub data_weight: &'a [f32],
    /// Target differences to the right neighbour (u[x+1] − u[x]), interleaved; NaN = no constraint.
    pub grad_x: &'a [f32],
    /// Target differences to the neighbour below.
    pub grad_y: &'a [f32],
}

const CHUNK: usize = 4096;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let partial: Vec<f64> =
        a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum()).collect();
    partial.iter().sum()
}

impl PoissonProblem<'_> {
    /// Solves with at most `iterations` CG steps (stopping early when the
    /// residual falls below 1e-4 of the right-hand side); returns the image.
    pub fn solve(&self, iterations: usize) -> Vec<f32> {
        let (w, h, c) = (self.width, self.height, self.channels);
        let n = w * h;
        let mut out = self.data.to_vec();
        let edge_ok = |i: usize, j: usize| self.active[i] && self.active[j];
        // Diagonal of the system matrix.
        let diag: Vec<f64> = (0..n)
            .map(|i| {
                if !self.active[i] {
                    return 1.0;
                }
                let (x, y) = (i % w, i / w);
                let mut d = self.data_weight[i] as f64;
                for (ok, j) in
                    [(x > 0, i.wrapping_sub(1)), (x + 1 < w, i + 1), (y > 0, i.wrapping_sub(w)), (y + 1 < h, i + w)]
                {
                    if ok && edge_ok(i, j) {
                        d += 1.0;
                    }
                }
                d.max(1e-6)
            })
            .collect();
        let apply = |u: &[f64], out: &mut [f64]| {
            out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
                for x in 0..w {
                    let i = y * w + x;
                    if !self.active[i] {
                        row[x] = 0.0;
                        continue;
                    }
                    let mut v = self.data_weight[i] as f64 * u[i];
                    for (ok, j) in
                        [(x > 0, i.wrapping_sub(1)), (x + 1 < w, i + 1), (y > 0, i.wrapping_sub(w)), (y + 1 < h, i + w)]
                    {
                        if ok && edge_ok(i, j) {
                            v += u[i] - u[j];
                        }
                    }
                    row[x] = v;
                }
            });
        };
        for ch in 0..c {
            // Right-hand side: λ d + divergence of the constrained gradients.
            let mut b = vec![0.0f64; n];
            let mut has_edge = vec![false; n];
            for y in 0..h {
                for x in 0..w {
                    let i = y * w + x;
                    if !self.active[i] {
                        continue;
                    }
                    b[i] += self.data_weight[i] as f64 * self.data[i * c + ch] as f64;
                    if x + 1 < w && edge_ok(i, i + 1) {
                        let g = self.grad_x[i * c + ch];
                        let g =
                            if g.is_finite() { g } else { self.data[(i + 1) * c + ch] - self.data[i * c + ch] } as f64;
                        b[i] -= g;
                        b[i + 1] += g;
                        has_edge[i] = true;
                        has_edge[i + 1] = true;
                    }
                    if y + 1 < h && edge_ok(i, i + w) {
                        let g = self.grad_y[i * c + ch];
                        let g =
                            if g.is_finite() { g } else { self.data[(i + w) * c + ch] - self.data[i * c + ch] } as f64;
                        b[i] -= g;
                        b[i + w] += g;
                        has_edge[i] = true;
                        has_edge[i + w] = true;
                    }
                }
            }
            let mut u: Vec<f64> = (0..n).map(|i| self.data[i * c + ch] as f64).collect();
            // An isolated pixel with no data weight would be singular: pin it.
            let pinned: Vec<bool> =
                (0..n).map(|i| self.active[i] && !has_edge[i] && self.data_weight[i] <= 0.0).collect();
            let mut au = vec![0.0f64; n];
            apply(&u, &mut au);
            let mut r: Vec<f64> =
                (0..n).map(|i| if self.active[i] && !pinned[i] { b[i] - au[i] } else { 0.0 }).collect();
            let b_norm = dot(&b, &b).sqrt().max(1e-12);
            let mut z: Vec<f64> = r.iter().zip(&diag).map(|(r, d)| r / d).collect();
            let mut p = z.clone();
            let mut rz = dot(&r, &z);
            let mut ap = vec![0.0f64; n];
            for _ in 0..iterations {
                if dot(&r, &r).sqrt() < 1e-4 * b_norm {
                    break;
                }
                apply(&p, &mut ap);
                for i in 0..n {
                    if pinned[i] {
                        ap[i] = 0.0;
                    }
                }
                let pap = dot(&p, &ap);
                if pap <= 0.0 {
                    break;
                }
                let alpha = rz / pap;
                u.par_iter_mut().zip(&p).for_each(|(u, p)| *u += alpha * p);
                r.par_iter_mut().zip(&ap).for_each(|(r, ap)| *r -= alpha * ap);
                z.par_iter_mut().zip(&r).zip(&diag).for_each(|((z, r), d)| *z = r / d);
                let rz_new = dot(&r, &z);
                let beta = rz_new / rz;
                rz = rz_new;
                p.par_iter_mut().zip(&z).for_each(|(p, z)| *p = z + beta * *p);
            }
            for i in 0..n {
                if self.active[i] {
                    out[i * c + ch] = u[i] as f32;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_gradients_and_data_are_reproduced() {
        // d is a ramp and the gradients are the ramp's: the solution is d.
        let (w, h) = (16, 8);
        let data: Vec<f32> = (0..w * h).map(|i| (i % w) as f32 * 0.1).collect();
        let gx = vec![0.1f32; w * h];
        let gy = vec![0.0f32; w * h];
        let active = vec![true; w * h];
        let lambda = vec![0.01f32; w * h];
        let p = PoissonProblem {
            width: w,
            height: h,
            channels: 1,
            active: &active,
            data: &data,
            data_weight: &lambda,
            grad_x: &gx,
            grad_y: &gy,
        };
        let u = p.solve(200);
        for (a, b) in u.iter().zip(&data) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn a_seam_in_the_data_is_removed_when_gradients_say_flat() {
        // Left half 0, right half 1 in the data; gradients all zero, weak
        // data term: the result is nearly flat (seam gone) at the mean.
        let (w, h) = (20, 4);
        let data: Vec<f32> = (0..w * h).map(|i| if i % w < 10 { 0.0 } else { 1.0 }).collect();
        let zeros = vec![0.0f32; w * h];
        let active = vec![true; w * h];
        let lambda = vec![1e-4f32; w * h];
        let p = PoissonProblem {
            width: w,
            height: h,
            channels: 1,
            active: &active,
            data: &data,
            data_weight: &lambda,
            grad_x: &zeros,
            grad_y: &zeros,
        };
        let u = p.solve(500);
        let jump = (u[10] - u[9]).abs();
        assert!(jump < 0.01, "seam of {jump} left");
        assert!((u[0] - 0.5).abs() < 0.05);
    }
}
