//! elkfs master: all metadata in memory, made durable by a changelog and snapshots.
//!
//! * [`state`]: the pure metadata state machine (`apply(record)`) and image conversion.
//! * [`frame`], [`changelog`], [`snapshot`], [`recovery`], [`files`]: durable formats,
//!   group commit, images, start-up replay.
//! * [`cluster`], [`placement`], [`sessions`]: soft state rebuilt after a restart;
//!   [`chunk_ops`]: which chunk changes may run side by side.
//! * [`planner`]: what healing does next (pure); [`healer`]: carries it out.
//! * [`feed`]: what metaloggers follow (image, records, acks); [`notices`]: what mounts
//!   watching for changes are told.
//! * [`core`]: the running master; [`ops`]: what each request does;
//!   [`service`]: gRPC adapters; [`server`]: serving them; [`config`]: settings.

pub mod changelog;
pub mod chunk_ops;
pub mod cluster;
pub mod config;
pub mod core;
pub mod deleter;
pub mod feed;
pub mod fence;
pub mod files;
pub mod frame;
pub mod healer;
pub mod notices;
pub mod ops;
pub mod placement;
pub mod planner;
pub mod recovery;
pub mod server;
pub mod service;
pub mod sessions;
pub mod snapshot;
pub mod state;
