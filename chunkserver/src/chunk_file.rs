//! One chunk file: header, per-block CRCs, reads that verify and writes that keep the CRCs
//! right. Pure file I/O (no networking, no locking): the caller serializes access to a chunk
//! and tracks its length, so every operation here is a few positioned reads/writes.
//!
//! Layout (docs/architecture.md): `[0..8)` magic, `[8..16)` id LE, `[16..20)` version LE,
//! `[4096..8192)` 1024 LE CRC32 slots (one per 64 KiB block), data from 8192. The chunk
//! length is the file length minus the header; the last block's CRC covers only the bytes
//! present.

use elkfs_proto::limits::{BLOCKS_PER_CHUNK, BLOCK_SIZE, CHUNK_SIZE};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"ELKCHNK1";
pub const HEADER_SIZE: u64 = 8192;
const CRC_OFFSET: u64 = 4096;
const BLOCK: usize = BLOCK_SIZE as usize;

/// A block of zeros, so gap blocks get their CRC without an allocation.
static ZEROS: [u8; BLOCK] = [0; BLOCK];

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk file I/O: {0}")]
    Io(#[from] io::Error),
    #[error("CRC mismatch in block {block}")]
    Damaged { block: u64 },
    #[error("bad chunk header: {0}")]
    BadHeader(String),
    #[error("range {offset}+{len} is outside a chunk")]
    OutOfRange { offset: u64, len: u64 },
}

/// An open chunk file. Holds only the descriptor: length and version live with the caller.
#[derive(Debug)]
pub struct ChunkFile {
    file: File,
}

impl ChunkFile {
    /// Creates a new, empty chunk file (fails if the path exists).
    pub fn create(path: &Path, id: u64, version: u32) -> Result<ChunkFile, ChunkError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        ChunkFile::init(file, id, version)
    }

    /// Makes the empty `file` (opened for reading and writing) an empty chunk.
    pub fn init(file: File, id: u64, version: u32) -> Result<ChunkFile, ChunkError> {
        let mut header = vec![0u8; HEADER_SIZE as usize];
        header[0..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&id.to_le_bytes());
        header[16..20].copy_from_slice(&version.to_le_bytes());
        file.write_all_at(&header, 0)?;
        Ok(ChunkFile { file })
    }

    /// Opens an existing chunk file and checks its magic and id.
    pub fn open(path: &Path, id: u64) -> Result<ChunkFile, ChunkError> {
        ChunkFile::open_with(path, id, Wait::Disk)
    }

    fn open_with(path: &Path, id: u64, wait: Wait) -> Result<ChunkFile, ChunkError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut head = [0u8; 16];
        read_at(&file, &mut head, 0, wait).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ChunkError::BadHeader("file shorter than its header".into())
            } else {
                ChunkError::Io(e)
            }
        })?;
        if &head[0..8] != MAGIC {
            return Err(ChunkError::BadHeader("bad magic".into()));
        }
        let mut idb = [0u8; 8];
        idb.copy_from_slice(&head[8..16]);
        let file_id = u64::from_le_bytes(idb);
        if file_id != id {
            return Err(ChunkError::BadHeader(format!(
                "header holds chunk {file_id:016X}, expected {id:016X}"
            )));
        }
        Ok(ChunkFile { file })
    }

    /// Chunk length as stored on disk (file length minus header).
    pub fn disk_len(&self) -> Result<u64, ChunkError> {
        let size = self.file.metadata()?.len();
        size.checked_sub(HEADER_SIZE)
            .ok_or_else(|| ChunkError::BadHeader("file shorter than its header".into()))
    }

    /// Rewrites the version field (the file name is authoritative; this keeps them equal).
    pub fn set_version(&self, version: u32) -> Result<(), ChunkError> {
        self.file.write_all_at(&version.to_le_bytes(), 16)?;
        Ok(())
    }

    pub fn sync_data(&self) -> Result<(), ChunkError> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Reads `[offset, offset+size)` clipped to `len`, verifying the CRC of every block
    /// touched. Never returns bytes from a block whose CRC does not match.
    pub fn read(&self, len: u64, offset: u64, size: u64) -> Result<Vec<u8>, ChunkError> {
        self.read_with(len, offset, size, Wait::Disk)
    }

    /// [`ChunkFile::read`] of the chunk at `path` if every byte it needs (header, data,
    /// CRCs) is in the page cache; `Ok(None)` if any would come from the disk. Serves
    /// reads on an async worker without a hand-off to the blocking pool, which cost a
    /// third of a random 4 KiB read's time here.
    pub fn read_cached(
        path: &Path,
        id: u64,
        len: u64,
        offset: u64,
        size: u64,
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let read = ChunkFile::open_with(path, id, Wait::CachedOnly)
            .and_then(|f| f.read_with(len, offset, size, Wait::CachedOnly));
        match read {
            Ok(data) => Ok(Some(data)),
            Err(ChunkError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_with(
        &self,
        len: u64,
        offset: u64,
        size: u64,
        wait: Wait,
    ) -> Result<Vec<u8>, ChunkError> {
        check_range(offset, size)?;
        let end = (offset + size).min(len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let first = offset / BLOCK_SIZE;
        let (mut buf, _) = self.read_checked(len, first, (end - 1) / BLOCK_SIZE, wait)?;
        // Usually the request is block aligned and nothing moves.
        let skip = (offset - first * BLOCK_SIZE) as usize;
        let keep = (end - offset) as usize;
        if skip > 0 {
            buf.copy_within(skip..skip + keep, 0);
        }
        buf.truncate(keep);
        Ok(buf)
    }

    /// Reads the whole blocks from the block-aligned `offset` up to `max` bytes (clipped to
    /// `len`), verified, with their stored CRCs: what a replica is built from.
    pub fn read_blocks(
        &self,
        len: u64,
        offset: u64,
        max: u64,
    ) -> Result<(Vec<u8>, Vec<u32>), ChunkError> {
        check_range(offset, max)?;
        if !offset.is_multiple_of(BLOCK_SIZE) {
            return Err(ChunkError::OutOfRange { offset, len: max });
        }
        let end = (offset + max).min(len);
        if offset >= end {
            return Ok((Vec::new(), Vec::new()));
        }
        self.read_checked(len, offset / BLOCK_SIZE, (end - 1) / BLOCK_SIZE, Wait::Disk)
    }

    /// Blocks `first..=last` (the last clipped to `len`) and their stored CRCs, each block
    /// checked against its CRC.
    fn read_checked(
        &self,
        len: u64,
        first: u64,
        last: u64,
        wait: Wait,
    ) -> Result<(Vec<u8>, Vec<u32>), ChunkError> {
        let span_start = first * BLOCK_SIZE;
        let span_end = ((last + 1) * BLOCK_SIZE).min(len);
        let mut buf = vec![0u8; (span_end - span_start) as usize];
        read_at(&self.file, &mut buf, HEADER_SIZE + span_start, wait)
            .map_err(eof_is_damage(first))?;
        let mut slots = [0u8; BLOCKS_PER_CHUNK * 4];
        let nslots = (last - first + 1) as usize;
        read_at(
            &self.file,
            &mut slots[..nslots * 4],
            CRC_OFFSET + first * 4,
            wait,
        )?;
        let crcs: Vec<u32> = (0..nslots).map(|i| slot(&slots, i)).collect();
        for (i, (block, want)) in buf.chunks(BLOCK).zip(&crcs).enumerate() {
            if crc32fast::hash(block) != *want {
                return Err(ChunkError::Damaged {
                    block: first + i as u64,
                });
            }
        }
        Ok((buf, crcs))
    }

    /// Stores whole blocks received with their CRCs at the block-aligned `offset` (only the
    /// chunk's last block may be short), after checking every block against the CRC it came
    /// with; the CRCs are stored as received, so nothing is checksummed twice. For filling a
    /// new replica in order: the caller tracks the length.
    pub fn write_blocks(&self, offset: u64, data: &[u8], crcs: &[u32]) -> Result<(), ChunkError> {
        check_range(offset, data.len() as u64)?;
        let blocks = data.len().div_ceil(BLOCK);
        if !offset.is_multiple_of(BLOCK_SIZE) || crcs.len() != blocks {
            return Err(ChunkError::OutOfRange {
                offset,
                len: data.len() as u64,
            });
        }
        let first = offset / BLOCK_SIZE;
        let mut slots = Vec::with_capacity(blocks * 4);
        for (i, (block, crc)) in data.chunks(BLOCK).zip(crcs).enumerate() {
            if crc32fast::hash(block) != *crc {
                return Err(ChunkError::Damaged {
                    block: first + i as u64,
                });
            }
            slots.extend_from_slice(&crc.to_le_bytes());
        }
        self.file.write_all_at(data, HEADER_SIZE + offset)?;
        self.file.write_all_at(&slots, CRC_OFFSET + first * 4)?;
        Ok(())
    }

    /// Asks the kernel to drop the file's cached pages (best effort), so a scrub reads what
    /// is on the disk and does not push hot data out of the page cache.
    pub fn drop_cache(&self) {
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
        let rc =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            tracing::debug!(errno = rc, "posix_fadvise(DONTNEED) failed");
        }
    }

    /// Writes `data` at `offset` into a chunk currently `len` bytes long and returns the new
    /// length. A gap between `len` and `offset` reads as zeros afterwards. An empty write
    /// changes nothing.
    pub fn write(&self, len: u64, offset: u64, data: &[u8]) -> Result<u64, ChunkError> {
        check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(len);
        }
        self.put(len, offset, data)
    }

    /// Cuts or zero-extends the chunk from `len` to `new_len` bytes.
    pub fn truncate(&self, len: u64, new_len: u64) -> Result<(), ChunkError> {
        check_range(new_len, 0)?;
        if new_len >= len {
            if new_len > len {
                self.put(len, new_len, &[])?;
            }
            return Ok(());
        }
        let keep_blocks = new_len.div_ceil(BLOCK_SIZE);
        let old_blocks = len.div_ceil(BLOCK_SIZE);
        let mut slots = [0u8; BLOCKS_PER_CHUNK * 4];
        // A cut inside a block re-checksums its remaining prefix; the whole old block is
        // verified first so damage is not laundered into a valid CRC.
        let cut_in_block = new_len % BLOCK_SIZE;
        let first = if cut_in_block != 0 {
            let last = keep_blocks - 1;
            let start = last * BLOCK_SIZE;
            let mut block = vec![0u8; (len.min(start + BLOCK_SIZE) - start) as usize];
            self.file
                .read_exact_at(&mut block, HEADER_SIZE + start)
                .map_err(eof_is_damage(last))?;
            if crc32fast::hash(&block) != self.stored_crc(last)? {
                return Err(ChunkError::Damaged { block: last });
            }
            let crc = crc32fast::hash(&block[..(new_len - start) as usize]);
            slots[0..4].copy_from_slice(&crc.to_le_bytes());
            last
        } else {
            keep_blocks
        };
        self.file.set_len(HEADER_SIZE + new_len)?;
        // Slots past the end are cleared so a later scrub never sees stale CRCs.
        if old_blocks > first {
            let n = (old_blocks - first) as usize;
            self.file
                .write_all_at(&slots[..n * 4], CRC_OFFSET + first * 4)?;
        }
        Ok(())
    }

    /// The write path shared by writes and zero-extension: computes the CRC of every block
    /// the change touches (including gap blocks between `len` and `offset`), writes the data,
    /// then the CRC slots. Full blocks take their CRC straight from `data`; only partial
    /// blocks read their old bytes.
    fn put(&self, len: u64, offset: u64, data: &[u8]) -> Result<u64, ChunkError> {
        let end = offset + data.len() as u64;
        let new_len = len.max(end);
        let first = offset.min(len) / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let mut slots = [0u8; BLOCKS_PER_CHUNK * 4];
        let mut scratch: Vec<u8> = Vec::new();
        for b in first..=last {
            let bs = b * BLOCK_SIZE;
            let be = (bs + BLOCK_SIZE).min(new_len);
            let crc = if offset <= bs && end >= be {
                crc32fast::hash(&data[(bs - offset) as usize..(be - offset) as usize])
            } else {
                let old_end = len.min(be);
                let ov_start = offset.max(bs);
                let ov_end = end.min(be);
                if old_end <= bs && ov_start >= ov_end {
                    // Entirely inside the zero gap.
                    crc32fast::hash(&ZEROS[..(be - bs) as usize])
                } else {
                    scratch.clear();
                    scratch.resize((be - bs) as usize, 0);
                    if old_end > bs {
                        let old = &mut scratch[..(old_end - bs) as usize];
                        self.file
                            .read_exact_at(old, HEADER_SIZE + bs)
                            .map_err(eof_is_damage(b))?;
                        // Re-checksumming a damaged block would make its damage look valid.
                        if crc32fast::hash(old) != self.stored_crc(b)? {
                            return Err(ChunkError::Damaged { block: b });
                        }
                    }
                    if ov_start < ov_end {
                        scratch[(ov_start - bs) as usize..(ov_end - bs) as usize].copy_from_slice(
                            &data[(ov_start - offset) as usize..(ov_end - offset) as usize],
                        );
                    }
                    crc32fast::hash(&scratch)
                }
            };
            let i = (b - first) as usize * 4;
            slots[i..i + 4].copy_from_slice(&crc.to_le_bytes());
        }
        if data.is_empty() {
            self.file.set_len(HEADER_SIZE + new_len)?;
        } else {
            self.file.write_all_at(data, HEADER_SIZE + offset)?;
        }
        let n = (last - first + 1) as usize;
        self.file
            .write_all_at(&slots[..n * 4], CRC_OFFSET + first * 4)?;
        Ok(new_len)
    }
}

impl ChunkFile {
    fn stored_crc(&self, block: u64) -> Result<u32, ChunkError> {
        let mut b = [0u8; 4];
        self.file.read_exact_at(&mut b, CRC_OFFSET + block * 4)?;
        Ok(u32::from_le_bytes(b))
    }
}

fn slot(slots: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&slots[i * 4..i * 4 + 4]);
    u32::from_le_bytes(b)
}

fn check_range(offset: u64, len: u64) -> Result<(), ChunkError> {
    match offset.checked_add(len) {
        Some(end) if end <= CHUNK_SIZE => Ok(()),
        _ => Err(ChunkError::OutOfRange { offset, len }),
    }
}

/// Whether a read may wait for the disk.
#[derive(Clone, Copy)]
enum Wait {
    Disk,
    /// Only what the page cache holds; anything else fails with `WouldBlock`.
    CachedOnly,
}

/// `read_exact_at`, or with [`Wait::CachedOnly`] `preadv2(RWF_NOWAIT)` until `buf` is full.
fn read_at(file: &File, buf: &mut [u8], offset: u64, wait: Wait) -> io::Result<()> {
    if let Wait::Disk = wait {
        return file.read_exact_at(buf, offset);
    }
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `iov` describes `rest`, which is valid for writes of its length and
        // outlives the call; the descriptor belongs to `file`.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                return Err(match e.raw_os_error() {
                    // A filesystem without RWF_NOWAIT reads the blocking way.
                    Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => io::ErrorKind::WouldBlock.into(),
                    _ => e,
                });
            }
        }
    }
    Ok(())
}

/// A file shorter than the length we believe it has is damage, not a plain I/O error.
fn eof_is_damage(block: u64) -> impl Fn(io::Error) -> ChunkError {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ChunkError::Damaged { block }
        } else {
            ChunkError::Io(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn new_chunk(dir: &tempfile::TempDir) -> ChunkFile {
        ChunkFile::create(&dir.path().join("c.elk"), 7, 1).unwrap()
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Every block's CRC slot matches the bytes present, read back independently.
    fn assert_crcs_valid(c: &ChunkFile, len: u64) {
        let all = c.read(len, 0, len).unwrap();
        assert_eq!(all.len() as u64, len);
        assert_eq!(c.disk_len().unwrap(), len);
    }

    #[test]
    fn header_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.elk");
        let c = ChunkFile::create(&p, 0x1122_3344_5566_7788, 9).unwrap();
        c.set_version(10).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw.len(), 8192);
        assert_eq!(&raw[0..8], b"ELKCHNK1");
        assert_eq!(&raw[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&raw[16..20], &10u32.to_le_bytes());
        assert!(ChunkFile::open(&p, 5).is_err());
        assert!(ChunkFile::open(&p, 0x1122_3344_5566_7788).is_ok());
    }

    #[test]
    fn round_trip_with_partial_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let c = new_chunk(&dir);
        let data = pattern(200_000, 3);
        let len = c.write(0, 0, &data).unwrap();
        assert_eq!(len, 200_000);
        assert_eq!(c.read(len, 0, 1 << 20).unwrap(), data);
        assert_eq!(c.read(len, 70_000, 10).unwrap(), &data[70_000..70_010]);
        assert_eq!(c.read(len, 199_990, 100).unwrap(), &data[199_990..]);
        assert!(c.read(len, 300_000, 10).unwrap().is_empty());
        // Overwrite a range straddling a block boundary.
        let patch = pattern(1000, 77);
        let len = c.write(len, 65_000, &patch).unwrap();
        let mut model = data.clone();
        model[65_000..66_000].copy_from_slice(&patch);
        assert_eq!(c.read(len, 0, len).unwrap(), model);
        assert_crcs_valid(&c, len);
    }

    #[test]
    fn writes_at_block_boundaries_plus_minus_one() {
        for off in [BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1] {
            for n in [1u64, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1] {
                let dir = tempfile::tempdir().unwrap();
                let c = new_chunk(&dir);
                let base = pattern(3 * BLOCK, 1);
                let len = c.write(0, 0, &base).unwrap();
                let d = pattern(n as usize, 9);
                let len2 = c.write(len, off, &d).unwrap();
                let mut model = base.clone();
                let end = (off + n) as usize;
                if end > model.len() {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&d);
                assert_eq!(len2, model.len() as u64);
                assert_eq!(c.read(len2, 0, len2).unwrap(), model, "off {off} n {n}");
            }
        }
    }

    #[test]
    fn gap_is_zero_filled_with_valid_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let c = new_chunk(&dir);
        let len = c.write(0, 0, &[1, 2, 3]).unwrap();
        let len = c.write(len, 5 * BLOCK_SIZE + 17, &[9; 10]).unwrap();
        assert_eq!(len, 5 * BLOCK_SIZE + 27);
        let all = c.read(len, 0, len).unwrap();
        assert_eq!(&all[..3], &[1, 2, 3]);
        assert!(all[3..(5 * BLOCK + 17)].iter().all(|&b| b == 0));
        assert_eq!(&all[5 * BLOCK + 17..], &[9; 10]);
    }

    #[test]
    fn truncate_down_and_up() {
        let dir = tempfile::tempdir().unwrap();
        let c = new_chunk(&dir);
        let data = pattern(3 * BLOCK + 500, 5);
        let len = c.write(0, 0, &data).unwrap();
        c.truncate(len, BLOCK_SIZE + 100).unwrap();
        let len = BLOCK_SIZE + 100;
        assert_eq!(c.read(len, 0, len).unwrap(), &data[..len as usize]);
        c.truncate(len, 4 * BLOCK_SIZE).unwrap();
        let len2 = 4 * BLOCK_SIZE;
        let all = c.read(len2, 0, len2).unwrap();
        assert_eq!(&all[..len as usize], &data[..len as usize]);
        assert!(all[len as usize..].iter().all(|&b| b == 0));
        c.truncate(len2, 0).unwrap();
        assert!(c.read(0, 0, 100).unwrap().is_empty());
        assert_eq!(c.disk_len().unwrap(), 0);
        c.truncate(0, CHUNK_SIZE).unwrap();
        assert_crcs_valid(&c, CHUNK_SIZE);
        assert!(c.truncate(0, CHUNK_SIZE + 1).is_err());
    }

    #[test]
    fn flipped_byte_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.elk");
        let c = ChunkFile::create(&p, 7, 1).unwrap();
        let len = c.write(0, 0, &pattern(2 * BLOCK, 1)).unwrap();
        let mut raw = std::fs::read(&p).unwrap();
        raw[HEADER_SIZE as usize + BLOCK + 10] ^= 0x40;
        std::fs::write(&p, &raw).unwrap();
        let c = ChunkFile::open(&p, 7).unwrap();
        assert!(c.read(len, 0, 100).is_ok());
        assert!(matches!(
            c.read(len, BLOCK_SIZE + 5, 1),
            Err(ChunkError::Damaged { block: 1 })
        ));
        assert!(matches!(
            c.read(len, 0, len),
            Err(ChunkError::Damaged { block: 1 })
        ));
    }

    #[test]
    fn blocks_travel_with_their_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let src = new_chunk(&dir);
        let data = pattern(5 * BLOCK + 123, 4);
        let len = src.write(0, 0, &data).unwrap();
        let dst = ChunkFile::create(&dir.path().join("d.elk"), 7, 1).unwrap();
        let mut off = 0;
        while off < len {
            let (d, crcs) = src.read_blocks(len, off, 2 * BLOCK_SIZE).unwrap();
            assert_eq!(crcs.len(), d.len().div_ceil(BLOCK));
            dst.write_blocks(off, &d, &crcs).unwrap();
            off += d.len() as u64;
        }
        assert_eq!(off, len);
        assert_eq!(dst.disk_len().unwrap(), len);
        assert_eq!(dst.read(len, 0, len).unwrap(), data);
        assert!(src
            .read_blocks(len, len.next_multiple_of(BLOCK_SIZE), BLOCK_SIZE)
            .unwrap()
            .0
            .is_empty());
        assert!(src.read_blocks(len, 1, BLOCK_SIZE).is_err());

        let (mut d, crcs) = src.read_blocks(len, 0, 2 * BLOCK_SIZE).unwrap();
        d[BLOCK + 1] ^= 1;
        let other = ChunkFile::create(&dir.path().join("e.elk"), 7, 1).unwrap();
        assert!(matches!(
            other.write_blocks(0, &d, &crcs),
            Err(ChunkError::Damaged { block: 1 })
        ));
        assert!(other.write_blocks(0, &d, &crcs[..1]).is_err());
        assert!(other.write_blocks(5, &d[..10], &crcs[..1]).is_err());
    }

    #[test]
    fn rejects_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let c = new_chunk(&dir);
        assert!(c.write(0, CHUNK_SIZE, &[1]).is_err());
        assert!(c.write(0, u64::MAX, &[1]).is_err());
        assert!(c.read(0, u64::MAX, 2).is_err());
        assert_eq!(c.write(0, CHUNK_SIZE - 1, &[1]).unwrap(), CHUNK_SIZE);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_writes_match_model(
            ops in prop::collection::vec(
                (0u64..(6 * BLOCK_SIZE), 0usize..(2 * BLOCK + 3), any::<u8>(), 0u8..8),
                1..12,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let c = new_chunk(&dir);
            let mut model: Vec<u8> = Vec::new();
            for (off, n, seed, kind) in ops {
                if kind == 0 {
                    // An occasional truncate to `off`.
                    c.truncate(model.len() as u64, off).unwrap();
                    model.resize(off as usize, 0);
                } else {
                    let d = pattern(n, seed);
                    let len = c.write(model.len() as u64, off, &d).unwrap();
                    if n > 0 {
                        let end = off as usize + n;
                        if end > model.len() {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&d);
                    }
                    prop_assert_eq!(len, model.len() as u64);
                }
                let len = model.len() as u64;
                prop_assert_eq!(&c.read(len, 0, len).unwrap(), &model);
            }
            let len = model.len() as u64;
            let a = (len / 3, len / 2 + 7);
            prop_assert_eq!(
                c.read(len, a.0, a.1).unwrap(),
                model[a.0 as usize..((a.0 + a.1).min(len)) as usize].to_vec()
            );
        }
    }
}
