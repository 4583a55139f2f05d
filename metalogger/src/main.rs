//! `elkfs-metalogger --master ADDR[,ADDR...] --data DIR [--standby ...]`: see
//! docs/recovery.md.

use anyhow::Context;
use clap::Parser;
use elkfs_metalogger::ack::Acker;
use elkfs_metalogger::config::{Args, Config};
use elkfs_metalogger::control::{Control, ControlService, PromoteOrder, Role};
use elkfs_metalogger::follow::{Follower, MasterFeed};
use elkfs_metalogger::promote;
use elkfs_metalogger::replica::Replica;
use elkfs_metalogger::store::Store;
use elkfs_proto::standby::standby_server::StandbyServer;
use elkfs_proto::transport;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    elkfs_proto::daemon::init_logging();
    let cfg = Config::load(Args::parse())?;
    let masters = cfg
        .masters()
        .into_iter()
        .map(|addr| {
            let channel =
                transport::channel(&addr).with_context(|| format!("master address {addr:?}"))?;
            Ok(MasterFeed {
                client: transport::feed_client(channel),
                addr,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (dir, keep) = (cfg.data_dir.clone(), cfg.images_keep);
    let (store, state) = tokio::task::spawn_blocking(move || Store::open(&dir, keep))
        .await?
        .with_context(|| format!("opening {}", cfg.data_dir.display()))?;
    info!(master = %cfg.master, name = %cfg.name, version = store.version(), standby = cfg.standby, "elkfs-metalogger started");
    let log = store.log();
    let replica = cfg.standby.then(|| Replica::new(state));
    let following = Arc::new(Mutex::new(String::new()));
    let (orders_tx, mut orders) = mpsc::channel::<PromoteOrder>(1);
    if let Some(replica) = &replica {
        let control = Arc::new(Control {
            role: Mutex::new(Role::Standby),
            held: replica.held(),
            following: following.clone(),
            master_listen: cfg.master_listen.clone(),
            masters: cfg.masters(),
            orders: orders_tx,
        });
        let addr = tokio::net::lookup_host(&cfg.control)
            .await?
            .next()
            .with_context(|| format!("cannot resolve {}", cfg.control))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the control address {addr}"))?;
        info!(control = %addr, master_listen = %cfg.master_listen, "standby: ready for promotion");
        tokio::spawn(
            transport::server()
                .add_service(StandbyServer::new(ControlService(control)))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
    }
    let follower = Follower {
        acks: Acker::spawn(log.clone(), cfg.name.clone()),
        masters,
        store,
        replica,
        name: cfg.name.clone(),
        image_interval: Duration::from_secs(cfg.image_interval_secs.max(1)),
        following,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut follow = tokio::spawn(follower.run(stop_rx));
    let order = tokio::select! {
        r = elkfs_proto::daemon::shutdown_signal() => {
            r.context("watching signals")?;
            None
        }
        Some(order) = orders.recv() => Some(order),
        // Following stopped by itself: this directory cannot be written.
        r = &mut follow => {
            r?.context("metalogger data")?;
            return Ok(());
        }
    };
    let _ = stop_tx.send(true);
    let (store, replica) = follow.await?.context("metalogger data")?;
    if let Some(order) = order {
        return promote::become_master(&cfg, store, replica, order).await;
    }
    // Whatever was received is made durable before exiting, so a restart resumes there.
    log.wait(store.version()).await?;
    info!(version = store.version(), "stopped");
    Ok(())
}
