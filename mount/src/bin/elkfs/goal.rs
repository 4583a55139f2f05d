//! `elkfs getgoal` and `elkfs setgoal`: how many copies files keep.

use crate::target;
use anyhow::Result;
use elkfs_proto::admin::{GoalReply, InodeRequest, SetGoalReply, SetGoalRequest};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(after_help = "Output: one line per PATH, `PATH: GOAL`.\n\
Errors go to stderr as `elkfs: PATH: MESSAGE`; the exit status is 1 if any PATH failed.")]
pub struct GetArgs {
    /// Files or directories on an elkfs mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(clap::Args)]
#[command(after_help = "Output: one line per PATH,\n  \
`PATH: goal GOAL: C inodes changed, U unchanged, K chunks to re-replicate`\n\
where C and U count inodes (directories, files, symlinks) and K counts the chunks of the \
changed files, which the master now brings to the new goal in the background.\n\
Errors go to stderr as `elkfs: PATH: MESSAGE`; the exit status is 1 if any PATH failed.")]
pub struct SetArgs {
    /// Also every file and directory below each PATH.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Number of copies of each chunk, 1 to 9.
    goal: u32,
    /// Files or directories on an elkfs mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn get(args: GetArgs) -> Result<()> {
    target::each(
        &args.paths,
        |mut client, ino| async move { client.get_goal(InodeRequest { ino }).await },
        render_get,
    )
}

pub fn set(args: SetArgs) -> Result<()> {
    let (goal, recursive) = (args.goal, args.recursive);
    target::each(
        &args.paths,
        |mut client, ino| async move {
            client
                .set_goal(SetGoalRequest {
                    ino,
                    goal,
                    recursive,
                })
                .await
        },
        |path, reply| render_set(path, goal, reply),
    )
}

fn render_get(path: &Path, reply: &GoalReply) -> String {
    format!("{}: {}\n", path.display(), reply.goal)
}

fn render_set(path: &Path, goal: u32, r: &SetGoalReply) -> String {
    format!(
        "{}: goal {goal}: {} inodes changed, {} unchanged, {} chunks to re-replicate\n",
        path.display(),
        r.changed,
        r.unchanged,
        r.chunks
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_goal_lines() {
        assert_eq!(
            render_get(Path::new("/mnt/a b"), &GoalReply { goal: 2 }),
            "/mnt/a b: 2\n"
        );
        let reply = SetGoalReply {
            changed: 412,
            unchanged: 3,
            chunks: 980,
        };
        assert_eq!(
            render_set(Path::new("/mnt/t"), 3, &reply),
            "/mnt/t: goal 3: 412 inodes changed, 3 unchanged, 980 chunks to re-replicate\n"
        );
    }
}
