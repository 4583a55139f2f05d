//! elkfs chunkserver: stores 64 MiB chunks with per-block CRCs on local disks, serves reads
//! and chain writes, carries out the master's orders and keeps the master informed.
//!
//! * [`config`]: flags and TOML config;
//! * [`chunk_file`]: the on-disk format of one chunk (header, CRCs, verified reads/writes);
//! * [`index`]: the sled index that spares a directory scan after a clean shutdown;
//! * [`store`]: the data directories, reserve, per-chunk locking and every chunk operation;
//! * [`service`]: the `elkfs.chunk.Chunk` gRPC service; [`write_stream`]: chain writes;
//!   [`replicate`]: copying a chunk from a peer; [`fetch`]: sending one to a peer;
//! * [`scrub`]: background re-reading of every chunk;
//! * [`master_link`]: registration, heartbeats and damage reports.

pub mod chunk_file;
pub mod config;
pub mod fetch;
pub mod index;
pub mod master_link;
pub mod replicate;
pub mod scrub;
pub mod service;
pub mod store;
pub mod write_stream;
