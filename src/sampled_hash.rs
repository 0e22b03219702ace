//! A fast hasher for maps keyed by long texts that repeat (system prompts,
//! rendered pieces, words): every byte is hashed, eight at a time with a
//! multiply and a rotate, then the result is mixed once. It is not
//! collision-resistant; equal keys still compare in full, so a collision
//! only costs a comparison. (Hashing only a sample of a long key is not
//! enough: Hermes system prompts of one length often differ only deep
//! inside, and colliding keys then cost a long comparison each.)

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Default)]
pub struct SampledHasher(u64);

impl SampledHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for SampledHasher {
    fn finish(&self) -> u64 {
        // The avalanche step of MurmurHash3, so that low and high bits both
        // depend on every input bit (the map uses both).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last));
        self.add(bytes.len() as u64);
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
