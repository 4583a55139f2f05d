//! Goals and where a file's data lives, for the admin tool: GetGoal, SetGoal, FileInfo.

use crate::core::Master;
use crate::state::Body;
use elkfs_proto::admin::{ChunkInfo, FileInfoReply, SetGoalReply, SetGoalRequest};
use elkfs_proto::changelog::{record::Op, SetGoal};
use elkfs_proto::limits::CHUNK_SIZE;
use elkfs_proto::FsError;
use tracing::info;

impl Master {
    pub fn get_goal(&self, ino: u64) -> Result<u32, FsError> {
        Ok(self.lock().state.inode(ino)?.goal)
    }

    /// Logs a SetGoal record (none when nothing would change) and answers once it is
    /// durable. The healing planner sees the new goals as soon as the record is applied.
    pub async fn set_goal(&self, req: SetGoalRequest) -> Result<SetGoalReply, FsError> {
        let rec = SetGoal {
            ino: req.ino,
            goal: req.goal,
            recursive: req.recursive,
        };
        let summary = self
            .mutate(|m, inner| {
                let summary = inner.state.plan_goal(&rec)?;
                if summary.changed == 0 {
                    return Ok((inner.state.version, summary));
                }
                Ok((m.commit(inner, Op::SetGoal(rec))?, summary))
            })
            .await?;
        if summary.changed > 0 {
            info!(
                ino = req.ino,
                goal = req.goal,
                recursive = req.recursive,
                changed = summary.changed,
                chunks = summary.chunks,
                "goal set"
            );
        }
        Ok(SetGoalReply {
            changed: summary.changed,
            unchanged: summary.unchanged,
            chunks: summary.chunks,
        })
    }

    /// A regular file's size, goal and chunks with every copy the master knows of.
    pub fn file_info(&self, ino: u64) -> Result<FileInfoReply, FsError> {
        let inner = self.lock();
        let node = inner.state.inode(ino)?;
        let (size, ids) = match &node.body {
            Body::File { size, chunks } => (*size, chunks),
            Body::Dir(_) => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("not a regular file".into())),
        };
        let chunks = (0u64..)
            .zip(ids.iter())
            .filter(|(_, &id)| id != 0)
            .map(|(index, &id)| {
                let version = inner.state.chunks.get(&id).map_or(0, |c| c.version);
                let mut copies = inner.cluster.copy_info(id, version);
                copies.sort_by(|a, b| (&a.addr, a.server_id).cmp(&(&b.addr, b.server_id)));
                ChunkInfo {
                    index,
                    chunk_id: id,
                    version,
                    length: size
                        .saturating_sub(index.saturating_mul(CHUNK_SIZE))
                        .min(CHUNK_SIZE),
                    copies,
                }
            })
            .collect();
        Ok(FileInfoReply {
            ino,
            size,
            goal: node.goal,
            chunks,
        })
    }
}
