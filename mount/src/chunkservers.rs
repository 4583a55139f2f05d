//! One lazily connecting gRPC channel per chunkserver address, shared by reads and writes,
//! and which servers recently left a read waiting.

use crate::locks::lock;
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::{transport, FsError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long a server that left a read waiting is tried after the other copies.
const UNRESPONSIVE_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct ChunkServers {
    clients: Mutex<HashMap<String, ChunkClient<Channel>>>,
    /// Servers that did not answer a read in time, and when.
    unresponsive: Mutex<HashMap<String, Instant>>,
}

impl ChunkServers {
    pub fn client(&self, addr: &str) -> Result<ChunkClient<Channel>, FsError> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = transport::chunk_client(transport::data_channel(addr)?);
        clients.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// `addr` left a read waiting while another copy could have answered it.
    pub fn note_unresponsive(&self, addr: &str) {
        let now = Instant::now();
        let mut slow = lock(&self.unresponsive);
        slow.retain(|_, since| now.duration_since(*since) < UNRESPONSIVE_FOR);
        slow.insert(addr.to_owned(), now);
    }

    /// Whether `addr` answered in time lately, as far as this mount knows.
    pub fn responsive(&self, addr: &str) -> bool {
        lock(&self.unresponsive)
            .get(addr)
            .is_none_or(|since| since.elapsed() >= UNRESPONSIVE_FOR)
    }
}
