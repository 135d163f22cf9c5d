//! A small seeded random number generator (xoshiro256++) whose whole state
//! is four integers, so a checkpoint can store it and a resumed run draws
//! exactly the numbers the uninterrupted run would have.

use serde::{Deserialize, Serialize};

/// xoshiro256++ (Blackman & Vigna), seeded through splitmix64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    pub state: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        Self { state: [splitmix64(&mut s), splitmix64(&mut s), splitmix64(&mut s), splitmix64(&mut s)] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)` as `f32`.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }

    /// `count` indices drawn with replacement, each with probability
    /// proportional to `weights[i]` (non-negative; all-zero weights draw uniformly).
    pub fn weighted_indices(&mut self, weights: &[f32], count: usize) -> Vec<usize> {
        if weights.is_empty() {
            return Vec::new();
        }
        let mut cdf = Vec::with_capacity(weights.len());
        let mut total = 0.0f64;
        for &w in weights {
            total += if w.is_finite() && w > 0.0 { w as f64 } else { 0.0 };
            cdf.push(total);
        }
        (0..count)
            .map(|_| {
                if total <= 0.0 {
                    return self.below(weights.len());
                }
                let u = self.uniform() * total;
                cdf.partition_point(|&c| c <= u).min(weights.len() - 1)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_weights_are_respected() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(
            (0..10).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..10).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
        let picks = a.weighted_indices(&[0.0, 1.0, 3.0], 4000);
        assert!(!picks.contains(&0));
        let threes = picks.iter().filter(|&&i| i == 2).count() as f32 / 4000.0;
        assert!((threes - 0.75).abs() < 0.03, "{threes}");
        let mut p = a.permutation(50);
        p.sort();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
        let mean: f32 = (0..20000).map(|_| a.normal()).sum::<f32>() / 20000.0;
        assert!(mean.abs() < 0.03);
    }
}
