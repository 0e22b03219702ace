//! The one hash of this crate: 64-bit FNV-1a. It is stable across machines
//! and versions, so what it names (the session split, stored fingerprints,
//! synthetic ids) never moves. [`FastHasher`] is for in-memory maps keyed by
//! long texts that repeat: faster per byte, and never stored.

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

/// The fingerprint of long bytes (a written line, a normalised exchange):
/// [`FastHasher`]'s function, which has no seed, so the state file can keep
/// it from run to run; several times faster than FNV-1a on long input.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(bytes);
    h.finish()
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

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// A hasher for maps keyed by long texts that repeat (system prompts,
/// rendered pieces, words): every byte is hashed, eight at a time with a
/// multiply and a rotate, then [`fmix64`] once. It is not
/// collision-resistant; equal keys still compare in full, so a collision
/// only costs a comparison. (Hashing only a sample of a long key is not
/// enough: Hermes system prompts of one length often differ only deep
/// inside, and colliding keys then cost a long comparison each.)
#[derive(Default)]
pub struct FastHasher {
    h: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.h = (self.h.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        fmix64(self.h)
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

pub type BuildFast = BuildHasherDefault<FastHasher>;

/// A small xorshift generator for the unit tests' random cases (fixed
/// seeds, so a failure repeats).
#[cfg(test)]
pub fn test_rng(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn fingerprints_are_fixed_values() {
        // Stored in state files: a change here makes old files disagree.
        assert_ne!(fingerprint(b"a"), fingerprint(b"a\0"));
        assert_eq!(fingerprint(b"hermes"), 0x7c59_6657_abe2_a8a7);
    }

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn map_keys_hash_as_before() {
        // The standard library's key encoding: a str key is its bytes then
        // 0xff, a byte-slice key its length then its bytes.
        use std::hash::BuildHasher;
        let build = BuildFast::default();
        let mut by_hand = FastHasher::default();
        by_hand.write(b"hermes");
        by_hand.write(&[0xff]);
        assert_eq!(build.hash_one("hermes"), by_hand.finish());
        let mut by_hand = FastHasher::default();
        by_hand.write(&6usize.to_ne_bytes());
        by_hand.write(b"hermes");
        assert_eq!(build.hash_one(&b"hermes"[..]), by_hand.finish());
    }

    #[test]
    fn long_keys_that_differ_deep_inside_stay_apart() {
        let a = "x".repeat(10_000);
        let mut b = a.clone();
        b.replace_range(5_001..5_002, "y");
        let mut m: HashMap<String, u8, BuildFast> = HashMap::default();
        m.insert(a.clone(), 1);
        m.insert(b.clone(), 2);
        assert_eq!(m[&a], 1);
        assert_eq!(m[&b], 2);
    }
}
