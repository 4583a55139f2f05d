//! elkfs wire protocols and the few types every component shares.
//!
//! * [`meta`]: client ↔ master, [`chunk`]: chunkserver data and orders,
//!   [`registry`]: chunkserver → master, [`admin`]: `elkfs` tool → master,
//!   [`changelog`]: the master's durable record and snapshot formats,
//!   [`feed`]: master → metalogger (image and live records, acks).
//! * [`FsError`]: the one error type that crosses the wire, and its single mapping to errno.
//! * [`limits`], [`transport`]: sizes and gRPC settings both ends must agree on.

pub mod buckets;
pub mod calls;
mod coalesce;
pub mod daemon;
pub mod error;
pub mod limits;
pub mod time;
pub mod transport;

pub use error::FsError;

pub mod meta {
    tonic::include_proto!("elkfs.meta");
}
pub mod chunk {
    tonic::include_proto!("elkfs.chunk");
}
pub mod registry {
    tonic::include_proto!("elkfs.registry");
}
pub mod admin {
    tonic::include_proto!("elkfs.admin");
}
pub mod changelog {
    tonic::include_proto!("elkfs.changelog");
}
pub mod feed {
    tonic::include_proto!("elkfs.feed");
}
pub mod standby {
    tonic::include_proto!("elkfs.standby");
}
