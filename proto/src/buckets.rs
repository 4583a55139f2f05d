//! Per-bucket chunk digests, compared at chunkserver registration so a reconnecting
//! server lists only the buckets (chunk directories `00`–`FF`) that changed.
//!
//! A digest is a wrapping sum of a 64-bit mix of each (chunk, version): independent of
//! order, so both sides can build it incrementally from whatever order they hold chunks in.

/// Number of buckets; a chunk's bucket is also its directory on a chunkserver.
pub const BUCKETS: usize = 256;

pub fn bucket_of(chunk_id: u64) -> u8 {
    (chunk_id & 0xFF) as u8
}

/// Digest of one bucket: add every chunk copy it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub chunks: u64,
    pub sum: u64,
}

impl Digest {
    pub fn add(&mut self, chunk_id: u64, version: u32) {
        self.chunks += 1;
        self.sum = self.sum.wrapping_add(mix(chunk_id, version));
    }

    pub fn remove(&mut self, chunk_id: u64, version: u32) {
        self.chunks -= 1;
        self.sum = self.sum.wrapping_sub(mix(chunk_id, version));
    }
}

/// splitmix64's finalizer over the pair: a change of id or version changes the sum.
fn mix(chunk_id: u64, version: u32) -> u64 {
    let mut z = chunk_id ^ (u64::from(version)).rotate_left(40) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Digests of every bucket of a chunk list.
pub fn digests(chunks: impl IntoIterator<Item = (u64, u32)>) -> [Digest; BUCKETS] {
    let mut out = [Digest::default(); BUCKETS];
    for (id, version) in chunks {
        out[bucket_of(id) as usize].add(id, version);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_version_sensitive() {
        let a = digests([(1, 1), (257, 3), (2, 1)]);
        let b = digests([(2, 1), (1, 1), (257, 3)]);
        assert_eq!(a, b);
        let c = digests([(1, 1), (257, 4), (2, 1)]);
        assert_ne!(a[1], c[1]);
        assert_eq!(a[2], c[2]);
        let mut d = a[1];
        d.remove(257, 3);
        d.add(257, 4);
        assert_eq!(d, c[1]);
    }
}
