//! Conversions between wire timestamps and `SystemTime` (64-bit seconds, nanoseconds kept).

use crate::meta::Timespec;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now() -> Timespec {
    from_system(SystemTime::now())
}

pub fn from_system(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            // Before 1970: floor to whole seconds below, keep nanoseconds non-negative.
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), 0u32);
            if d.subsec_nanos() > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - d.subsec_nanos();
            }
            Timespec { sec, nsec }
        }
    }
}

pub fn to_system(t: &Timespec) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_before_1970_and_after_2106() {
        for (sec, nsec) in [
            (-1, 5),
            (-86_400 * 365 * 100, 999_999_999),
            (5_000_000_000, 1),
            (0, 0),
        ] {
            let t = Timespec { sec, nsec };
            assert_eq!(from_system(to_system(&t)), t);
        }
    }
}
