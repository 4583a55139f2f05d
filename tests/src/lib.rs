//! Cross-process test harness: real `elkfs-master`, `elkfs-chunkserver` and `elkfs-mount`
//! processes from this workspace's target directory, real FUSE mounts, real disks.
//!
//! * [`Cluster`]: one master and N chunkservers on a loopback address of its own, with a
//!   temporary directory for data and logs; kill/restart helpers; cleans up on drop, even
//!   when the test panics, and prints the daemons' log tails when it does.
//! * [`Mount`]: a FUSE mount of a cluster.
//! * [`copies`]: chunk copies as the master lists them and as they lie on disk; waiting
//!   for healing. [`netns`]: a network namespace to partition a daemon off.
//! * [`fsutil`]: errno assertions, running a syscall as another user, deterministic
//!   random data.

mod admin;
mod bins;
pub mod changelog;
mod cluster;
pub mod copies;
pub mod fsutil;
pub mod metalogger;
mod mount;
pub mod netns;
mod process;

pub use admin::admin_status;
pub use bins::bin;
pub use cluster::{next_loopback_ip, Cluster, Opts, START_TIMEOUT};
pub use elkfs_proto::admin::StatusReply;
pub use mount::Mount;
pub use process::Daemon;
