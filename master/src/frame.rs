//! Frames for changelog records and snapshot entries:
//! `u32 len | u32 crc32(version ‖ payload) | u64 version | payload`, little endian.
//! A reader stops at the first frame that is torn (the file ends inside it, or it fails its
//! CRC with only zero-filled space after it: a crash cut it short) or corrupt.
//! A header's worth of zeros where a frame would start ends the stream cleanly when nothing
//! but zeros follows: changelog files are zero-filled ahead of their last record.

use std::io::{self, Read};

pub const HEADER_LEN: usize = 16;
/// Larger lengths can only come from a damaged header.
const MAX_PAYLOAD: usize = 256 << 20;

pub fn encode(version: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&version.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(payload);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("torn frame at byte {offset}: the data ends inside it")]
    Torn { offset: u64 },
    #[error("corrupt frame at byte {offset}: {why}")]
    Corrupt { offset: u64, why: &'static str },
    #[error("read error at byte {offset}: {why}")]
    Io { offset: u64, why: String },
}

impl FrameError {
    /// Byte offset where the good part of the file ends.
    pub fn offset(&self) -> u64 {
        match self {
            FrameError::Torn { offset }
            | FrameError::Corrupt { offset, .. }
            | FrameError::Io { offset, .. } => *offset,
        }
    }
}

/// Where the whole frames at the start of `stream` end: where a writer continues, and
/// where the zero-filled space of a changelog file begins.
pub fn records_end(stream: impl Read) -> u64 {
    let mut frames = FrameReader::new(stream);
    frames.by_ref().take_while(Result::is_ok).for_each(drop);
    frames.end()
}

pub struct Frame {
    pub offset: u64,
    pub version: u64,
    pub payload: Vec<u8>,
}

/// Iterates the frames of a stream; after the first error it yields nothing more.
pub struct FrameReader<R> {
    inner: R,
    offset: u64,
    done: bool,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            offset: 0,
            done: false,
        }
    }

    /// Fill `buf` completely. Ok(false) on a clean end of stream before the first byte.
    fn fill(&mut self, buf: &mut [u8], at: u64) -> Result<bool, FrameError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(FrameError::Torn { offset: at }),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FrameError::Io {
                        offset: at,
                        why: e.to_string(),
                    })
                }
            }
        }
        Ok(true)
    }

    /// Where the whole frames read so far end.
    fn end(&self) -> u64 {
        self.offset
    }

    /// How many zeros end the stream from here, or None if other bytes follow.
    fn zeros_to_end(&mut self, at: u64) -> Result<Option<u64>, FrameError> {
        let mut buf = [0u8; 1 << 16];
        let mut zeros = 0;
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => return Ok(Some(zeros)),
                Ok(n) if buf[..n].iter().any(|&b| b != 0) => return Ok(None),
                Ok(n) => zeros += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FrameError::Io {
                        offset: at,
                        why: e.to_string(),
                    })
                }
            }
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let at = self.offset;
        let mut head = [0u8; HEADER_LEN];
        if !self.fill(&mut head, at)? {
            return Ok(None);
        }
        if head == [0; HEADER_LEN] {
            // No frame header is all zeros: with length and version 0, the CRC (of the
            // zero version) is not 0.
            return if self.zeros_to_end(at)?.is_some() {
                Ok(None)
            } else {
                Err(FrameError::Corrupt {
                    offset: at,
                    why: "zeroed bytes before the end of the data",
                })
            };
        }
        let word = |i: usize| [head[i], head[i + 1], head[i + 2], head[i + 3]];
        let len = u32::from_le_bytes(word(0)) as usize;
        let crc = u32::from_le_bytes(word(4));
        let mut v = [0u8; 8];
        v.copy_from_slice(&head[8..16]);
        let version = u64::from_le_bytes(v);
        if len > MAX_PAYLOAD {
            return Err(FrameError::Corrupt {
                offset: at,
                why: "impossible length",
            });
        }
        let mut payload = vec![0u8; len];
        if len > 0 && !self.fill(&mut payload, at)? {
            return Err(FrameError::Torn { offset: at });
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&v);
        h.update(&payload);
        if h.finalize() != crc {
            // A header's worth of zeros or more to the end: the writer's zero-filled space,
            // so a record a crash cut short while it was being written.
            if self
                .zeros_to_end(at)?
                .is_some_and(|n| n >= HEADER_LEN as u64)
            {
                return Err(FrameError::Torn { offset: at });
            }
            return Err(FrameError::Corrupt {
                offset: at,
                why: "CRC mismatch",
            });
        }
        self.offset += (HEADER_LEN + len) as u64;
        Ok(Some(Frame {
            offset: at,
            version,
            payload,
        }))
    }
}

impl<R: Read> Iterator for FrameReader<R> {
    type Item = Result<Frame, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_frame() {
            Ok(Some(f)) => Some(Ok(f)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (v, p) in frames {
            encode(*v, p, &mut out);
        }
        out
    }

    proptest! {
        #[test]
        fn round_trip(frames in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let buf = encode_all(&frames);
            let back: Vec<(u64, Vec<u8>)> = FrameReader::new(&buf[..])
                .map(|f| f.map(|f| (f.version, f.payload)))
                .collect::<Result<_, _>>()
                .expect("clean stream");
            prop_assert_eq!(back, frames);
        }

        /// Cutting the stream anywhere keeps every whole frame before the cut and reports
        /// the tear exactly where the first incomplete frame starts.
        #[test]
        fn torn_tail_keeps_the_prefix(frames in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..100)), 1..10), cut in any::<prop::sample::Index>()) {
            let buf = encode_all(&frames);
            let cut = cut.index(buf.len());
            let mut good = 0;
            let mut ends = Vec::new();
            let mut pos = 0;
            for (_, p) in &frames {
                pos += HEADER_LEN + p.len();
                ends.push(pos);
            }
            let results: Vec<_> = FrameReader::new(&buf[..cut]).collect();
            for r in &results {
                match r {
                    Ok(_) => good += 1,
                    Err(e) => prop_assert_eq!(e, &FrameError::Torn { offset: if good == 0 { 0 } else { ends[good - 1] as u64 } }),
                }
            }
            prop_assert_eq!(good, ends.iter().filter(|&&e| e <= cut).count());
        }

        /// Zero-filled space after the frames ends the stream; data after zeros is damage.
        #[test]
        fn zero_tail_is_the_end(frames in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..100)), 0..10), zeros in HEADER_LEN..200_000, junk in 1u8..) {
            let mut buf = encode_all(&frames);
            let data_end = buf.len() as u64;
            buf.resize(buf.len() + zeros, 0);
            let mut reader = FrameReader::new(&buf[..]);
            let back: Vec<(u64, Vec<u8>)> = reader.by_ref()
                .map(|f| f.map(|f| (f.version, f.payload)))
                .collect::<Result<_, _>>()
                .expect("clean stream");
            prop_assert_eq!(back, frames.clone());
            prop_assert_eq!(reader.end(), data_end);
            buf.push(junk);
            let last = FrameReader::new(&buf[..]).last().expect("an item");
            prop_assert_eq!(last.err(), Some(FrameError::Corrupt { offset: data_end, why: "zeroed bytes before the end of the data" }));
        }

        /// A last frame cut short with zeros after it (a crash while writing into
        /// zero-filled space) is torn, as a file ending inside it is.
        #[test]
        fn cut_short_in_zeros_is_torn(frames in prop::collection::vec((any::<u64>(), prop::collection::vec(1u8.., 1..100)), 1..10), cut in any::<prop::sample::Index>(), zeros in HEADER_LEN..10_000) {
            let buf = encode_all(&frames);
            let last_len = HEADER_LEN + frames[frames.len() - 1].1.len();
            let last = buf.len() - last_len;
            let mut torn = buf[..last + 1 + cut.index(last_len - 1)].to_vec();
            torn.resize(buf.len() + zeros, 0);
            let results: Vec<_> = FrameReader::new(&torn[..]).collect();
            prop_assert_eq!(results.len(), frames.len());
            prop_assert_eq!(results[frames.len() - 1].as_ref().err(), Some(&FrameError::Torn { offset: last as u64 }));
        }

        /// Any single flipped bit is detected; frames before it are still returned.
        #[test]
        fn flipped_bit_is_detected(frames in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 1..100)), 1..10), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut buf = encode_all(&frames);
            let i = at.index(buf.len());
            buf[i] ^= 1 << bit;
            let results: Vec<_> = FrameReader::new(&buf[..]).collect();
            prop_assert!(results.iter().any(|r| r.is_err()), "flip at {} not detected", i);
            let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            for (f, (v, p)) in ok.iter().zip(&frames) {
                prop_assert_eq!(f.version, *v);
                prop_assert_eq!(&f.payload, p);
            }
        }
    }
}
