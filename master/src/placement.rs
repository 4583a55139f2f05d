//! Where new chunk copies go. Pure: takes a view of the servers, returns a choice.

/// What placement needs to know about one chunkserver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    /// Bytes new chunks may still use (free space minus the server's reserve).
    pub avail: u64,
    /// Chunks on the server, counting ones just placed there (spreads a burst of creates).
    pub chunks: u64,
}

/// Up to `goal` distinct servers for a new chunk: servers with room, fewest chunks first,
/// then most available space. Never two copies on one server.
pub fn choose(candidates: &[Candidate], goal: usize, exclude: &[u64]) -> Vec<u64> {
    let mut eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.avail > 0 && !exclude.contains(&c.id))
        .collect();
    eligible.sort_by(|a, b| {
        a.chunks
            .cmp(&b.chunks)
            .then(b.avail.cmp(&a.avail))
            .then(a.id.cmp(&b.id))
    });
    let mut out: Vec<u64> = Vec::with_capacity(goal);
    for c in eligible {
        if out.len() == goal {
            break;
        }
        if !out.contains(&c.id) {
            out.push(c.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(id: u64, avail: u64, chunks: u64) -> Candidate {
        Candidate { id, avail, chunks }
    }

    #[test]
    fn full_servers_are_skipped_and_least_loaded_first() {
        let servers = [c(1, 0, 0), c(2, 100, 5), c(3, 100, 1), c(4, 500, 1)];
        assert_eq!(choose(&servers, 2, &[]), vec![4, 3]);
        assert_eq!(choose(&servers, 5, &[]), vec![4, 3, 2]);
        assert_eq!(choose(&servers, 2, &[4]), vec![3, 2]);
        assert!(choose(&[c(1, 0, 0)], 1, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn choice_is_distinct_bounded_and_has_room(
            servers in prop::collection::vec((1u64..20, 0u64..3, 0u64..10), 0..12),
            goal in 1usize..5,
        ) {
            let servers: Vec<Candidate> = servers.into_iter().map(|(id, a, n)| c(id, a, n)).collect();
            let chosen = choose(&servers, goal, &[]);
            prop_assert!(chosen.len() <= goal);
            let mut dedup = chosen.clone();
            dedup.sort_unstable();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), chosen.len());
            for id in &chosen {
                prop_assert!(servers.iter().any(|s| s.id == *id && s.avail > 0));
            }
            let distinct_with_room = {
                let mut ids: Vec<u64> = servers.iter().filter(|s| s.avail > 0).map(|s| s.id).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.len()
            };
            prop_assert_eq!(chosen.len(), goal.min(distinct_with_room));
        }
    }
}
