//! `elkfs status`: the master's Admin.Status as a table.

use anyhow::{Context, Result};
use elkfs_proto::admin::{StatusReply, StatusRequest};
use elkfs_proto::transport;

#[derive(clap::Args)]
pub struct Args {
    /// Master address (host:port).
    #[arg(long, default_value = "127.0.0.1:9520")]
    master: String,
}

pub fn run(args: Args) -> Result<()> {
    let reply = fetch_blocking(&args.master)?;
    print!("{}", render(&reply));
    Ok(())
}

/// Admin.Status from the master at `addr`.
pub async fn fetch(addr: &str) -> Result<StatusReply> {
    let channel = transport::channel(addr).with_context(|| format!("bad master address {addr}"))?;
    let reply = transport::admin_client(channel)
        .status(StatusRequest {})
        .await
        .with_context(|| format!("asking master {addr} for its status"))?;
    Ok(reply.into_inner())
}

pub fn fetch_blocking(addr: &str) -> Result<StatusReply> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio runtime")?
        .block_on(fetch(addr))
}

fn render(r: &StatusReply) -> String {
    let mut out = format!(
        "metadata version  {}\ninodes            {}\nchunks            {}\nsessions          {}\n\n",
        r.metadata_version, r.inodes, r.chunks, r.sessions
    );
    let mut servers: Vec<_> = r.servers.iter().collect();
    servers.sort_by_key(|s| s.server_id);
    let rows: Vec<[String; 6]> = servers
        .into_iter()
        .map(|s| {
            [
                s.server_id.to_string(),
                s.addr.clone(),
                if s.connected { "yes" } else { "no" }.to_owned(),
                human_bytes(s.used_bytes),
                human_bytes(s.total_bytes),
                s.chunks.to_string(),
            ]
        })
        .collect();
    let header = ["ID", "ADDRESS", "CONNECTED", "USED", "TOTAL", "CHUNKS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no chunkservers)\n");
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::admin::ServerStatus;

    #[test]
    fn renders_servers_as_aligned_rows() {
        let reply = StatusReply {
            metadata_version: 7,
            inodes: 3,
            chunks: 2,
            sessions: 1,
            servers: vec![ServerStatus {
                server_id: 1,
                addr: "127.0.0.1:9530".into(),
                connected: true,
                total_bytes: 10 << 30,
                used_bytes: 1536,
                avail_bytes: 0,
                chunks: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&reply);
        assert!(text.contains("metadata version  7"));
        assert!(
            text.contains("1   127.0.0.1:9530  yes        1.5 KiB  10.0 GiB  2"),
            "{text}"
        );
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1 << 20), "1.0 MiB");
    }
}
