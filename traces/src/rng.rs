//! Seed derivation: every random stream is keyed by (base seed, coordinates), never by thread or order.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// SplitMix64 finaliser: a strong 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for the stream at `coords` under `base`.
pub fn derive_seed(base: u64, coords: &[u64]) -> u64 {
    coords
        .iter()
        .fold(mix64(base), |acc, &c| mix64(acc ^ mix64(c)))
}

/// The portable, fast generator used everywhere in moesim (Xoshiro256++; same stream on every platform).
pub type SimRng = Xoshiro256PlusPlus;

/// A generator for the stream at `coords` under `base`.
pub fn rng_for(base: u64, coords: &[u64]) -> SimRng {
    SimRng::seed_from_u64(derive_seed(base, coords))
}
