//! elkfs metalogger: follows the master's metadata live and keeps the image and changelog
//! files in the master's own formats, so metadata survives the loss of the master host.
//! A standby (`--standby`) also keeps the metadata in memory and can become the master.
//!
//! * [`config`]: settings; [`store`]: the data directory;
//! * [`follow`]: the stream from the master(s), reconnects, image refresh;
//! * [`ack`]: durable versions back to the master; [`lag`]: commit → durable statistics;
//! * [`replica`]: a standby's in-memory metadata; [`control`]: its control service;
//!   [`promote`]: becoming the master.

pub mod ack;
pub mod config;
pub mod control;
pub mod follow;
pub mod lag;
pub mod promote;
pub mod replica;
pub mod store;
