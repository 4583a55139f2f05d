//! Goals: how many copies of each chunk a file wants. Pure planning of a SetGoal record.

use super::{Body, State};
use elkfs_proto::changelog;
use elkfs_proto::FsError;
use std::collections::HashSet;

/// Highest goal. Copies live on distinct chunkservers, so a goal is bounded by the cluster
/// size anyway; 9 is MooseFS's limit, more than any cluster wants, and it turns a typo such
/// as `setgoal 30` into an error rather than chunks that stay under goal forever.
pub const MAX_GOAL: u32 = 9;

/// What a SetGoal record does (or did).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoalSummary {
    /// Inodes whose goal changes.
    pub changed: u64,
    /// Inodes that already had the goal.
    pub unchanged: u64,
    /// Chunks of the changed files: the healing planner's new work.
    pub chunks: u64,
}

/// The inodes a SetGoal record changes, in no particular order, and its summary.
pub(super) struct GoalPlan {
    pub changed: Vec<u64>,
    pub summary: GoalSummary,
}

fn check_goal(goal: u32) -> Result<(), FsError> {
    if (1..=MAX_GOAL).contains(&goal) {
        Ok(())
    } else {
        Err(FsError::Invalid(format!(
            "goal {goal} is not within 1..={MAX_GOAL}"
        )))
    }
}

impl State {
    /// What `r` would change, without changing anything. Unknown inode: NotFound.
    pub fn plan_goal(&self, r: &changelog::SetGoal) -> Result<GoalSummary, FsError> {
        self.goal_plan(r).map(|p| p.summary)
    }

    pub(super) fn goal_plan(&self, r: &changelog::SetGoal) -> Result<GoalPlan, FsError> {
        check_goal(r.goal)?;
        self.inode(r.ino)?;
        let mut plan = GoalPlan {
            changed: Vec::new(),
            summary: GoalSummary::default(),
        };
        // A hard-linked file may be met under several names; it counts once.
        let mut seen = HashSet::new();
        let mut todo = vec![r.ino];
        while let Some(ino) = todo.pop() {
            let Some(node) = self.inodes.get(&ino) else {
                continue;
            };
            if !seen.insert(ino) {
                continue;
            }
            if node.goal == r.goal {
                plan.summary.unchanged += 1;
            } else {
                plan.summary.changed += 1;
                plan.changed.push(ino);
                if let Body::File { chunks, .. } = &node.body {
                    plan.summary.chunks += chunks.iter().filter(|&&c| c != 0).count() as u64;
                }
            }
            if let (true, Some(d)) = (r.recursive, node.dir()) {
                todo.extend(d.entries.values().map(|e| e.ino));
            }
        }
        Ok(plan)
    }

    pub(super) fn set_goal(&mut self, r: &changelog::SetGoal) -> Result<GoalSummary, FsError> {
        let plan = self.goal_plan(r)?;
        for ino in plan.changed {
            if let Some(node) = self.inodes.get_mut(&ino) {
                node.goal = r.goal;
            }
        }
        Ok(plan.summary)
    }
}
