//! elkfs metalogger: follows the master's metadata live and keeps the image and changelog
//! files in the master's own formats, so metadata survives the loss of the master host.
//!
//! * [`config`]: settings; [`store`]: the data directory;
//! * [`follow`]: the stream from the master, reconnects, image refresh;
//! * [`ack`]: durable versions back to the master; [`lag`]: commit → durable statistics.

pub mod ack;
pub mod config;
pub mod follow;
pub mod lag;
pub mod store;
