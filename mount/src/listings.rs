//! Open directory listings (FUSE directory handles) and where each one was seen to end.
//! A listing is read page by page until a page comes back empty; once a page from the
//! master said it was the last, that empty page is known without asking the master again,
//! which halves the round trips of listing a small directory (`find`, `du`, `rm -r`).

use crate::locks::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Listings {
    next: AtomicU64,
    /// Open handle → the cookie its listing ended after, once known.
    ends: Mutex<HashMap<u64, Option<u64>>>,
}

impl Listings {
    pub fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.ends).insert(fh, None);
        fh
    }

    pub fn close(&self, fh: u64) {
        lock(&self.ends).remove(&fh);
    }

    /// The listing behind `fh` has nothing after the entry with `cookie`.
    pub fn ended_after(&self, fh: u64, cookie: u64) {
        if let Some(end) = lock(&self.ends).get_mut(&fh) {
            *end = Some(cookie);
        }
    }

    /// Whether a page of `fh` from `cookie` on is known to be empty. Entries made since
    /// the listing ended are not in it, which POSIX allows of a listing already under way.
    pub fn past_end(&self, fh: u64, cookie: u64) -> bool {
        lock(&self.ends).get(&fh) == Some(&Some(cookie))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_page_after_a_known_end_is_empty() {
        let l = Listings::default();
        let a = l.open();
        let b = l.open();
        assert_ne!(a, b);
        assert!(!l.past_end(a, 0));
        l.ended_after(a, 7);
        assert!(l.past_end(a, 7));
        // Rewound, or another handle of the same directory: asked again.
        assert!(!l.past_end(a, 0));
        assert!(!l.past_end(b, 7));
        l.close(a);
        assert!(!l.past_end(a, 7));
        // A closed handle learns nothing.
        l.ended_after(a, 7);
        assert!(!l.past_end(a, 7));
    }
}
