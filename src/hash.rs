//! The one hash of this crate: 64-bit FNV-1a. It is stable across machines
//! and versions, so what it names (the session split, stored fingerprints,
//! synthetic ids) never moves. [`SampledHasher`] feeds the same function
//! with a few slices of a long key, for maps keyed by repeated long texts.

use std::hash::{BuildHasherDefault, Hasher};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a of `bytes`, continuing from `h`.
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// FNV-1a of a text.
pub fn stable_hash(s: &str) -> u64 {
    fnv1a_from(OFFSET, s.as_bytes())
}

/// MurmurHash3's 64-bit finalizer: spreads every input bit over the whole
/// word (FNV-1a alone mixes its high bits poorly for texts that differ only
/// at the end).
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Slices of this many bytes, at most this many of them.
const SLICE: usize = 32;
const SLICES: usize = 16;

/// A cheap hasher for maps keyed by long texts that repeat (system
/// prompts): it hashes the length and a few evenly spread slices, not every
/// byte. Equal keys still compare in full, so a collision only costs a
/// comparison; the map stays correct.
#[derive(Default)]
pub struct SampledHasher(u64);

impl Hasher for SampledHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_from(self.0, &(bytes.len() as u64).to_le_bytes());
        if bytes.len() <= SLICE * SLICES {
            self.0 = fnv1a_from(self.0, bytes);
            return;
        }
        let step = (bytes.len() - SLICE) / (SLICES - 1);
        for i in 0..SLICES {
            let at = i * step;
            self.0 = fnv1a_from(self.0, &bytes[at..at + SLICE]);
        }
    }
}

pub type BuildSampled = BuildHasherDefault<SampledHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

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
