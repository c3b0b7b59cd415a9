//! Garbage collection: job records past their envelope's expiry and run volumes past their
//! time to live, by the running node every minute and by `fedq node gc` while it is stopped.

use crate::config::NodeConfig;
use crate::containers::{ContainerError, Sandbox};
use crate::error::NodeError;
use crate::jobs;
use crate::shared::Core;
use crate::state::StateDir;
use crate::time::Timestamp;

/// Removes, for the running node, what has outlived its time (everything with `everything`).
pub(crate) async fn collect(core: &Core, everything: bool) -> Result<(), ContainerError> {
    let now = Timestamp::now();
    core.state.forget_expired_jobs(now)?;
    let busy: Vec<_> =
        core.running.jobs.lock().expect("not poisoned").values().map(|j| j.record.run).collect();
    for (name, run, expires) in core.sandbox.volumes().await? {
        let expired = everything || expires.is_some_and(|e| e < now);
        if expired && run.is_some_and(|r| !busy.contains(&r)) {
            tracing::info!(volume = name, "removing an expired run volume");
            if let Some(run) = run {
                jobs::finish_run(core, run).await;
            }
        }
    }
    Ok(())
}

/// `fedq node gc`: removes this node's stopped containers, and its run volumes whose time has
/// passed (all of them with `all`), while the node is not running.
pub async fn gc(config: &NodeConfig, all: bool) -> Result<(usize, usize), NodeError> {
    let sandbox = Sandbox::connect_for_gc(config).await?;
    let state = StateDir::open(&config.node.state_dir, Timestamp::now())
        .map_err(|source| NodeError::State { path: config.node.state_dir.clone(), source })?;
    let mut containers = 0;
    for (name, _, running) in sandbox.containers().await? {
        if !running || all {
            sandbox.remove(&name).await;
            containers += 1;
        }
    }
    let now = Timestamp::now();
    let mut volumes = 0;
    for (name, run, expires) in sandbox.volumes().await? {
        if all || expires.is_some_and(|e| e < now) {
            if let Some(run) = run {
                if sandbox.remove_run_volume(run, &state.run_volume_image_path(run)).await.unwrap_or(false) {
                    volumes += 1;
                }
                let _ = state.remove_run(run);
            } else {
                tracing::warn!(volume = name, "a volume without a run label; left alone");
            }
        }
    }
    state
        .forget_expired_jobs(now)
        .map_err(|source| NodeError::State { path: config.node.state_dir.clone(), source })?;
    Ok((containers, volumes))
}
