//! `elkfs status`: the master's Admin.Status as tables: servers, then chunk health.

use crate::admin::{block_on, master_list, Masters};
use anyhow::Result;
use elkfs_proto::admin::{StatusReply, StatusRequest};
use std::collections::{BTreeMap, BTreeSet};

#[derive(clap::Args)]
pub struct Args {
    /// Master address (host:port), or several separated by commas: the active one answers.
    #[arg(long, default_value = "127.0.0.1:9520")]
    master: String,
}

pub fn run(args: Args) -> Result<()> {
    let reply = fetch_blocking(&args.master)?;
    print!("{}", render(&reply));
    Ok(())
}

/// Admin.Status from the master at `addr` (or the active one of a comma-separated list).
pub fn fetch_blocking(addr: &str) -> Result<StatusReply> {
    block_on(
        Masters::default().call(&master_list(addr), |mut client| async move {
            client.status(StatusRequest {}).await
        }),
    )
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn render(r: &StatusReply) -> String {
    let mut out = String::new();
    if r.superseded_by != 0 {
        out += &format!(
            "SUPERSEDED: a standby was promoted (epoch {}); this master serves nothing. \
             Stop it and start it empty as a standby (docs/recovery.md).\n\n",
            r.superseded_by
        );
    }
    out += &format!(
        "metadata version  {}\nmaster epoch      {}\ninodes            {}\nchunks            {}\nsessions          {}\n\n",
        r.metadata_version, r.epoch, r.inodes, r.chunks, r.sessions
    );
    let mut servers: Vec<_> = r.servers.iter().collect();
    servers.sort_by_key(|s| s.server_id);
    let rows: Vec<Vec<String>> = servers
        .into_iter()
        .map(|s| {
            vec![
                s.server_id.to_string(),
                s.addr.clone(),
                yes_no(s.connected),
                human_bytes(s.used_bytes),
                human_bytes(s.total_bytes),
                s.chunks.to_string(),
                yes_no(s.maintenance),
                match s.resting_secs {
                    0 => "-".to_owned(),
                    n => format!("{n}s"),
                },
                s.replications_in.to_string(),
                s.replications_out.to_string(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "ADDRESS",
        "CONNECTED",
        "USED",
        "TOTAL",
        "CHUNKS",
        "MAINTENANCE",
        "RESTING",
        "REPL_IN",
        "REPL_OUT",
    ];
    out.push_str(&table(&header, &rows));
    if rows.is_empty() {
        out.push_str("(no chunkservers)\n");
    }
    out.push('\n');
    out.push_str(&render_health(r));
    out
}

/// Chunks by goal (rows) and valid copies (columns), then the totals.
fn render_health(r: &StatusReply) -> String {
    let mut out = String::from("chunks by goal (rows) and valid copies (columns)\n");
    let goals: BTreeSet<u32> = r.health.iter().map(|c| c.goal).collect();
    let max_valid = r.health.iter().map(|c| c.valid).max().unwrap_or(0);
    let max_goal = goals.iter().copied().max().unwrap_or(0);
    let columns: Vec<u32> = (0..=max_valid.max(max_goal)).collect();
    let mut counts: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for c in &r.health {
        *counts.entry((c.goal, c.valid)).or_default() += c.chunks;
    }
    let header: Vec<String> = std::iter::once("GOAL".to_owned())
        .chain(columns.iter().map(u32::to_string))
        .collect();
    let rows: Vec<Vec<String>> = goals
        .iter()
        .map(|&g| {
            std::iter::once(g.to_string())
                .chain(
                    columns
                        .iter()
                        .map(|&v| counts.get(&(g, v)).copied().unwrap_or(0).to_string()),
                )
                .collect()
        })
        .collect();
    if rows.is_empty() {
        out.push_str("(no chunks)\n");
    } else {
        out.push_str(&table(&header, &rows));
    }
    out.push('\n');
    let totals = [
        ("missing", r.missing),
        ("endangered", r.endangered),
        ("under goal", r.under_goal),
        ("over goal", r.over_goal),
        ("damaged copies", r.damaged_copies),
        ("replications running", r.replications_running),
    ];
    for (name, n) in totals {
        out.push_str(&format!("{name:<22}{n}\n"));
    }
    out
}

/// Left-aligned columns two spaces apart, no trailing blanks.
fn table<H: AsRef<str>>(header: &[H], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.as_ref().to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
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
    use elkfs_proto::admin::{HealthCell, ServerStatus};

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
                maintenance: true,
                resting_secs: 27,
                replications_in: 4,
                replications_out: 15,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&reply);
        assert!(text.contains("metadata version  7"));
        assert!(
            text.contains(
                "ID  ADDRESS         CONNECTED  USED     TOTAL     CHUNKS  MAINTENANCE  RESTING  REPL_IN  REPL_OUT\n\
                 1   127.0.0.1:9530  yes        1.5 KiB  10.0 GiB  2       yes          27s      4        15\n"
            ),
            "{text}"
        );
        assert!(text.contains("(no chunks)\n"), "{text}");
    }

    #[test]
    fn a_superseded_master_says_so_first() {
        let fine = render(&StatusReply {
            epoch: 2,
            ..Default::default()
        });
        assert!(fine.contains("master epoch      2\n"), "{fine}");
        assert!(!fine.contains("SUPERSEDED"), "{fine}");
        let old = render(&StatusReply {
            superseded_by: 3,
            ..Default::default()
        });
        assert!(
            old.starts_with("SUPERSEDED: a standby was promoted (epoch 3)"),
            "{old}"
        );
    }

    #[test]
    fn renders_health_by_goal_and_valid_copies() {
        let cell = |goal, valid, chunks| HealthCell {
            goal,
            valid,
            chunks,
        };
        let reply = StatusReply {
            health: vec![cell(3, 1, 2), cell(2, 2, 40), cell(2, 0, 1), cell(1, 2, 7)],
            missing: 1,
            endangered: 2,
            under_goal: 3,
            over_goal: 7,
            damaged_copies: 4,
            replications_running: 5,
            ..Default::default()
        };
        let text = render_health(&reply);
        assert_eq!(
            text,
            "chunks by goal (rows) and valid copies (columns)\n\
             GOAL  0  1  2   3\n\
             1     0  0  7   0\n\
             2     1  0  40  0\n\
             3     0  2  0   0\n\
             \n\
             missing               1\n\
             endangered            2\n\
             under goal            3\n\
             over goal             7\n\
             damaged copies        4\n\
             replications running  5\n"
        );
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1 << 20), "1.0 MiB");
    }
}
