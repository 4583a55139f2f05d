//! One lazily connecting gRPC channel per chunkserver address, shared by reads and writes.

use crate::locks::lock;
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::{transport, FsError};
use std::collections::HashMap;
use std::sync::Mutex;
use tonic::transport::Channel;

#[derive(Default)]
pub struct ChunkServers {
    clients: Mutex<HashMap<String, ChunkClient<Channel>>>,
}

impl ChunkServers {
    pub fn client(&self, addr: &str) -> Result<ChunkClient<Channel>, FsError> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = transport::chunk_client(transport::channel(addr)?);
        clients.insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}
