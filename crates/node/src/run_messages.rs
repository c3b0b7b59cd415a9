//! Sending a run message for a job: to the job of the same run at another organization, sealed
//! for it and published. The endpoint's `POST /v1/messages` and the node's own secure-sum
//! messages both go this way.

use std::time::Duration;

use serde_bytes::ByteBuf;

use crate::active::ActiveJob;
use crate::envelope::Route;
use crate::ids::{MessageId, OrgId};
use crate::jobs;
use crate::protocol::{Kind, Payload, RunMessage};
use crate::shared::Core;

/// Why a run message did not leave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The organization has no job in the run.
    #[error("organization {0} has no job in this run; nothing was sent")]
    NotInRun(OrgId),
    /// No key of the organization is trusted.
    #[error("no trusted key for organization {0}{1}")]
    NoKey(OrgId, String),
    /// The broker did not confirm in time.
    #[error("the broker did not take the message; retry")]
    Unavailable,
}

/// Whether `org` may be sent run messages by `job`: in the job's task, or in another task of the
/// run. When the server cannot say (it is down), yes: run messages wait in the broker through a
/// server outage, and must keep doing so; the router refuses one to an organization with no job
/// in the run anyway.
pub(crate) async fn reachable(core: &Core, job: &ActiveJob, org: OrgId) -> bool {
    job.start.organizations.contains(&org) || core.in_run(job.record.run, org).await != Ok(false)
}

/// Seals `body` under `topic` for the run's job at `to` and publishes it; its envelope's id once
/// the broker confirms.
pub(crate) async fn send(
    core: &Core,
    job: &ActiveJob,
    to: OrgId,
    topic: String,
    body: Vec<u8>,
) -> Result<MessageId, SendError> {
    // Sent anyway, a message to an organization outside the run would never be logged and this
    // node's monitor would take it for the server's doing.
    if !reachable(core, job, to).await {
        return Err(SendError::NotInRun(to));
    }
    let route = Route {
        kind: Kind::RunMessage,
        collaboration: job.record.collaboration,
        task: job.record.task,
        run: job.record.run,
        status: None,
    };
    let payload = Payload::RunMessage(RunMessage {
        from_job: job.record.job,
        topic,
        body: ByteBuf::from(body),
        log_head: core.log.seen_head(),
    });
    let sealed = jobs::seal_to(core, to, &route, &payload).await.ok_or_else(|| {
        SendError::NoKey(to, core.peers.refusal(to).map(|r| format!(": {r}")).unwrap_or_default())
    })?;
    let mut halt = core.halt.clone();
    let publish = core.publish(&sealed.header, &sealed.bytes, &mut halt);
    match tokio::time::timeout(Duration::from_secs(30), publish).await {
        Ok(Ok(())) => Ok(sealed.header.id),
        _ => Err(SendError::Unavailable),
    }
}
