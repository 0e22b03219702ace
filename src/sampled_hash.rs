//! A cheap hasher for maps keyed by long texts that repeat (system
//! prompts): it hashes the length and a few evenly spread slices, not every
//! byte. Equal keys still compare in full, so a collision only costs a
//! comparison; the map stays correct.

use std::hash::{BuildHasherDefault, Hasher};

/// Slices of this many bytes, at most this many of them.
const SLICE: usize = 32;
const SLICES: usize = 16;

#[derive(Default)]
pub struct SampledHasher(u64);

impl SampledHasher {
    fn mix(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Hasher for SampledHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.mix(&(bytes.len() as u64).to_le_bytes());
        if bytes.len() <= SLICE * SLICES {
            self.mix(bytes);
            return;
        }
        let step = (bytes.len() - SLICE) / (SLICES - 1);
        for i in 0..SLICES {
            let at = i * step;
            self.mix(&bytes[at..at + SLICE]);
        }
    }
}

pub type BuildSampled = BuildHasherDefault<SampledHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_that_differ_only_between_samples_still_stay_apart() {
        let a = "x".repeat(10_000);
        let mut b = a.clone();
        b.replace_range(5_001..5_002, "y");
        let mut m: HashMap<String, u8, BuildSampled> = HashMap::default();
        m.insert(a.clone(), 1);
        m.insert(b.clone(), 2);
        assert_eq!(m[&a], 1);
        assert_eq!(m[&b], 2);
    }
}
