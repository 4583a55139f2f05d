//! What the store holds in sum, kept up to date on every change of a chunk (see
//! `Store::with_chunk`), so heartbeats and registration cost O(buckets), not O(chunks).

use crate::chunk_file::HEADER_SIZE;
use elkfs_proto::buckets::{bucket_of, Digest, BUCKETS};

/// What the store needs to know of a held chunk to count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub id: u64,
    pub version: u32,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Totals {
    pub chunks: u64,
    /// Bytes the chunk files take (data plus header).
    pub bytes: u64,
    pub buckets: [Digest; BUCKETS],
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            chunks: 0,
            bytes: 0,
            buckets: [Digest::default(); BUCKETS],
        }
    }
}

impl Totals {
    pub fn add(&mut self, h: Held) {
        self.chunks += 1;
        self.bytes += h.len + HEADER_SIZE;
        self.buckets[usize::from(bucket_of(h.id))].add(h.id, h.version);
    }

    fn remove(&mut self, h: Held) {
        self.chunks -= 1;
        self.bytes -= h.len + HEADER_SIZE;
        self.buckets[usize::from(bucket_of(h.id))].remove(h.id, h.version);
    }

    /// One chunk went from `before` to `after` (None: not held).
    pub fn change(&mut self, before: Option<Held>, after: Option<Held>) {
        if let Some(b) = before {
            self.remove(b);
        }
        if let Some(a) = after {
            self.add(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn incremental_equals_recomputed(
            ops in prop::collection::vec((0u64..600, prop::option::of((1u32..4, 0u64..1000))), 1..200)
        ) {
            let mut held: std::collections::BTreeMap<u64, Held> = Default::default();
            let mut t = Totals::default();
            for (id, change) in ops {
                let after = change.map(|(version, len)| Held { id, version, len });
                let before = match after {
                    Some(a) => held.insert(id, a),
                    None => held.remove(&id),
                };
                t.change(before, after);
            }
            let mut fresh = Totals::default();
            for h in held.values() {
                fresh.add(*h);
            }
            prop_assert_eq!(t, fresh);
        }
    }
}
