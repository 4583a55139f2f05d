//! Sizes and defaults every component must agree on.

/// A chunk holds at most this many bytes of one file.
pub const CHUNK_SIZE: u64 = 64 << 20;
/// Unit of CRC checking inside a chunk.
pub const BLOCK_SIZE: u64 = 64 << 10;
/// Blocks per chunk.
pub const BLOCKS_PER_CHUNK: usize = (CHUNK_SIZE / BLOCK_SIZE) as usize;
/// Largest data payload of one read or write message.
pub const MAX_IO: u32 = 8 << 20;
/// gRPC message limit: a full MAX_IO payload plus headers, and chunk lists at registration.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Longest file name component, in bytes (as Linux).
pub const MAX_NAME: usize = 255;
/// Longest symlink target, in bytes (as Linux PATH_MAX).
pub const MAX_SYMLINK: usize = 4096;
/// Largest file: chunk indexes stay well inside u32, offsets inside i64.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Root directory inode.
pub const ROOT_INO: u64 = 1;
/// Default number of copies at the root.
pub const DEFAULT_GOAL: u32 = 2;

pub const DEFAULT_MASTER_PORT: u16 = 9520;
pub const DEFAULT_MASTER_HTTP_PORT: u16 = 9525;
pub const DEFAULT_CHUNKSERVER_PORT: u16 = 9530;
