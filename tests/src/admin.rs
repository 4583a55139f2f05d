//! The master's Admin.Status, from synchronous test code.

use elkfs_proto::admin::{StatusReply, StatusRequest};
use elkfs_proto::transport;

/// Admin.Status of the master at `addr` (host:port).
pub fn admin_status(addr: &str) -> anyhow::Result<StatusReply> {
    // A runtime per call: the tests are synchronous and call this only while polling.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = transport::channel(addr)?;
        let reply = transport::admin_client(channel)
            .status(StatusRequest {})
            .await?;
        Ok(reply.into_inner())
    })
}
