//! The hash that assigns each training example to a mini-batch.
//!
//! Every worker must put an example in the same mini-batch, whatever worker
//! or process holds it, and a saved run must resume with the same batches
//! after an upgrade. So the assignment is a fixed function of the example's
//! identity, written out here rather than taken from a hasher whose output
//! may change between Rust versions or platforms.

/// The finaliser of splitmix64: a bijective 64-bit mix with good avalanche.
///
/// Steele, Lea and Flood, "Fast Splittable Pseudorandom Number Generators",
/// OOPSLA 2014; constants as in Vigna's reference `splitmix64.c`. The golden
/// gamma `0x9E3779B97F4A7C15` is added first, so `splitmix64(0)` is the first
/// output of the generator seeded with 0 (`0xE220A8397B1DCDAF`).
pub fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fixed 64-bit hash of an example's `(epoch, user, item)`, which decides
/// its mini-batch.
///
/// `splitmix64(splitmix64(splitmix64(epoch) ^ user) ^ item)`, in wrapping
/// `u64` arithmetic: the same on every platform and in every version of this
/// crate. It must never change, since it fixes the mini-batch order and so
/// the trained model; the test `batch_hash_is_frozen` pins its values.
pub fn batch_hash(epoch: u64, user: u64, item: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(epoch) ^ user) ^ item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_generator() {
        // The generator seeded with 0 outputs mix(0), mix(gamma), mix(2 gamma), ...
        let gamma = 0x9E37_79B9_7F4A_7C15u64;
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(gamma), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(gamma.wrapping_mul(2)), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn batch_hash_is_frozen() {
        // Values recorded when the function was introduced; changing them
        // changes every trained model.
        let pinned = [
            ((0, 0, 0), FROZEN[0]),
            ((1, 2, 3), FROZEN[1]),
            ((18_000, 1_150_086, 257_597), FROZEN[2]),
            ((u64::MAX, u64::MAX, u64::MAX), FROZEN[3]),
        ];
        for ((epoch, user, item), expected) in pinned {
            assert_eq!(
                batch_hash(epoch, user, item),
                expected,
                "({epoch}, {user}, {item})"
            );
        }
    }

    /// Computed independently of this crate (the same formula in Python's
    /// arbitrary-precision integers, masked to 64 bits).
    const FROZEN: [u64; 4] = [
        0x2382_75BC_38FC_BE91,
        0xD073_4750_FDE3_62B3,
        0x4D61_8E2D_58F5_1E09,
        0x595B_17F4_87C0_E71B,
    ];

    #[test]
    fn batch_hash_depends_on_every_argument_and_their_order() {
        let base = batch_hash(5, 6, 7);
        assert_ne!(base, batch_hash(6, 6, 7));
        assert_ne!(base, batch_hash(5, 7, 7));
        assert_ne!(base, batch_hash(5, 6, 8));
        assert_ne!(batch_hash(1, 2, 3), batch_hash(3, 2, 1));
        assert_ne!(batch_hash(0, 1, 2), batch_hash(0, 2, 1));
    }
}
