//! gRPC adapters (and the framed Meta calls, through the same handlers): decode a request,
//! call the matching [`Master`](crate::core::Master) method, encode the answer. No
//! decisions are made here.

mod admin;
mod calls;
mod feed;
mod meta;
mod origin;
mod registry;

pub use admin::AdminService;
pub use calls::serve as serve_calls;
pub use feed::FeedService;
pub use meta::MetaService;
pub use origin::Origin;
pub use registry::RegistryService;

use elkfs_proto::FsError;
use tonic::{Response, Status};

fn reply<T>(r: Result<T, FsError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}
