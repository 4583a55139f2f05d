//! Splits the chunk lists the master asked for into ReportBuckets calls of bounded size.
//! Buckets are never split: each call names exactly the buckets whose complete lists it
//! carries, so the master may reconcile call by call or gather them until `done`.

use elkfs_proto::buckets::bucket_of;
use elkfs_proto::registry::ChunkInfo;
use std::collections::BTreeMap;

/// Chunks per ReportBuckets call (about 1.3 MB encoded). Only a bucket larger than this
/// on its own makes a bigger call.
pub const MAX_REPORT_CHUNKS: usize = 50_000;

/// One ReportBuckets call's content.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub buckets: Vec<u32>,
    pub chunks: Vec<ChunkInfo>,
}

/// The calls for `buckets` (every asked bucket appears in exactly one call, also when we
/// hold nothing in it), filled with those of `chunks` that fall in them.
pub fn split(buckets: &[u32], chunks: Vec<ChunkInfo>, max: usize) -> Vec<Batch> {
    let mut by_bucket: BTreeMap<u32, Vec<ChunkInfo>> =
        buckets.iter().map(|b| (*b, Vec::new())).collect();
    for c in chunks {
        if let Some(list) = by_bucket.get_mut(&u32::from(bucket_of(c.chunk_id))) {
            list.push(c);
        }
    }
    let mut out = Vec::new();
    let mut cur = Batch::default();
    for (b, list) in by_bucket {
        if !cur.buckets.is_empty() && cur.chunks.len() + list.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        cur.buckets.push(b);
        cur.chunks.extend(list);
    }
    if !cur.buckets.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(id: u64) -> ChunkInfo {
        ChunkInfo {
            chunk_id: id,
            version: 1,
            length: 0,
        }
    }

    #[test]
    fn nothing_asked_nothing_sent() {
        assert!(split(&[], (0..10).map(info).collect(), 4).is_empty());
    }

    proptest! {
        #[test]
        fn whole_buckets_bounded_calls(
            ids in prop::collection::hash_set(0u64..5000, 0..800),
            asked in prop::collection::btree_set(0u32..256, 0..256),
            max in 1usize..100,
        ) {
            let asked: Vec<u32> = asked.into_iter().collect();
            let batches = split(&asked, ids.iter().copied().map(info).collect(), max);
            let mut seen_buckets = Vec::new();
            let mut seen_chunks = Vec::new();
            for b in &batches {
                prop_assert!(!b.buckets.is_empty());
                // Over the bound only with a single bucket.
                prop_assert!(b.chunks.len() <= max || b.buckets.len() == 1);
                for c in &b.chunks {
                    prop_assert!(b.buckets.contains(&u32::from(bucket_of(c.chunk_id))));
                }
                seen_buckets.extend(b.buckets.iter().copied());
                seen_chunks.extend(b.chunks.iter().map(|c| c.chunk_id));
            }
            prop_assert_eq!(&seen_buckets, &asked);
            seen_chunks.sort_unstable();
            let mut want: Vec<u64> = ids
                .into_iter()
                .filter(|id| asked.contains(&u32::from(bucket_of(*id))))
                .collect();
            want.sort_unstable();
            prop_assert_eq!(seen_chunks, want);
        }
    }
}
