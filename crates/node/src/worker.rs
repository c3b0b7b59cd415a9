//! The broker side of the node: one connection at a time, reconnecting by itself, consuming the
//! organization's queue with manual acknowledgements, and what each kind of envelope does.
//!
//! Replay protection has two layers. A `job_start` is recognised by its job id (see `jobs`);
//! every other envelope is checked against the persistent guard before it is handled and
//! recorded only after its effect is durable, then acknowledged. A crash between the effect and
//! the record redelivers the envelope, and every effect is idempotent (a run message is stored
//! under its envelope id, a kill of a stopped job does nothing), so nothing is lost or doubled.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::supervisor::{SessionEnd, supervise};
use crate::broker::{Consumer, Delivery, PublishChannel};
use crate::contract::NodeRefusal;

use crate::envelope::{self, OpenError, Opened, Replay, ReplayGuardError};
use crate::ids::MessageId;
use crate::jobs;
use crate::protocol::control::{CONTROL_TYPE, Control};
use crate::protocol::{Kind, Payload};
use crate::secagg;
use crate::shared::Core;
use crate::state::{InboxQuota, Stored, StoredMessage, SubtaskResult};
use crate::time::Timestamp;

/// Envelopes other than job starts that may be in flight beside the running jobs. Job starts
/// hold their delivery until the result is confirmed, so a prefetch of exactly the job limit
/// would leave no room for the run messages those jobs wait for.
const MESSAGE_HEADROOM: u16 = 64;

/// Connects, consumes until the connection fails, and connects again, until the node stops.
pub(crate) async fn consume_forever(core: Arc<Core>) {
    supervise(core.stop.clone(), || async {
        let end = consume_once(&core).await;
        core.link.set(None);
        end
    })
    .await;
}

async fn consume_once(core: &Arc<Core>) -> SessionEnd {
    let (connection, address) = match core.endpoints.connect().await {
        Ok(connected) => connected,
        Err(e) => return SessionEnd::lost(false, e),
    };
    tracing::info!(%address, "connected to the broker");
    let publish = match PublishChannel::open(&connection).await {
        Ok(channel) => channel,
        Err(e) => {
            let _ = connection.close(200, "could not open a channel".into()).await;
            return SessionEnd::lost(false, e);
        }
    };
    core.link.set(Some(publish));
    let queue = crate::broker::org_queue(core.org());
    let prefetch = core.config.limits.concurrent_jobs.saturating_add(MESSAGE_HEADROOM);
    let mut consumer = match Consumer::start(&connection, &queue, &core.config.node.name, prefetch).await {
        Ok(consumer) => consumer,
        Err(e) => {
            // Closed, not dropped: a dropped connection can stay open, and whatever it had
            // registered at the broker with it.
            let _ = connection.close(200, "could not consume".into()).await;
            return SessionEnd::lost(false, e);
        }
    };
    tracing::info!(%queue, "consuming");
    // Tell the server at once rather than at the next heartbeat.
    let _ = core.server.heartbeat(true, &core.policy_summary(), core.log.report()).await;
    let mut stop = core.stop.clone();
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = crate::shared::until_stopped(&mut stop) => {
                // Nothing new comes; running jobs keep the connection to publish their results
                // and acknowledge their deliveries until they finish or the grace period ends.
                consumer.cancel().await;
                let mut halt = core.halt.clone();
                tokio::select! {
                    () = crate::shared::until_stopped(&mut halt) => {}
                    () = core.running.all_done() => {}
                }
                // Whatever is still unacknowledged goes back to the queue for the next start.
                let _ = connection.close(200, "node stopping".into()).await;
                return SessionEnd::Stopped;
            }
        };
        match next {
            Some(Ok(delivery)) => {
                let core = core.clone();
                tokio::spawn(async move { handle(core, delivery).await });
            }
            Some(Err(e)) => return SessionEnd::lost(true, e),
            None => return SessionEnd::lost(true, "the broker closed the consumer"),
        }
    }
}

async fn handle(core: Arc<Core>, delivery: Delivery) {
    let received = std::time::Instant::now();
    let kind = delivery.kind.clone();
    if kind.as_deref() == Some(CONTROL_TYPE) {
        return handle_control(&core, delivery).await;
    }
    let opened = match open(&core, &delivery.data).await {
        Ok(opened) => opened,
        Err(OpenError::Replay { id }) => {
            // Handled before; its acknowledgement was lost.
            tracing::info!(%id, "duplicate envelope dropped");
            core.tally.rejections.record(&OpenError::Replay { id });
            core.metrics.rejected("replay");
            let _ = delivery.acker.ack().await;
            return;
        }
        Err(e @ OpenError::UnknownSenderKey { .. }) if core.stopping() => {
            // Held for keys when the node was asked to stop: the broker delivers it again.
            tracing::info!(error = %e, "leaving an envelope from an unfetched key to the next start");
            let _ = delivery.acker.requeue().await;
            return;
        }
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e, "envelope refused");
            core.tally.rejections.record(&e);
            core.metrics.rejected(e.code());
            // To the dead-letter exchange: kept for operators, never retried.
            let _ = delivery.acker.reject().await;
            return;
        }
    };
    let header = opened.header.clone();
    // The broker delivered it, so the server routed it: its leaf must be in the log.
    core.log.received(&header, &delivery.data);
    let payload = match opened.decode() {
        Ok(payload) => payload,
        Err(e) => {
            tracing::warn!(id = %header.id, error = %e, "payload refused");
            let _ = delivery.acker.reject().await;
            return;
        }
    };
    if let Some(theirs) = payload.log_head().cloned() {
        let (core, from) = (core.clone(), header.sender);
        tokio::spawn(async move { core.log.compare_partner(core.server.api(), &theirs, from).await });
    }
    let forget_after = header.expires_at.saturating_add(core.policy.clock_skew);
    let handled: std::io::Result<()> = match payload {
        Payload::JobStart(start) => {
            return jobs::accept(core.clone(), header, start, delivery.acker, received).await;
        }
        Payload::RunMessage(message) => {
            // `from_job` is the sender's word: bound to a job its organization runs in that
            // task, as the server lists it, before an algorithm is shown it.
            match core.job_of(header.task, message.from_job).await {
                Ok(Some(org)) if org == header.sender => {}
                Ok(_) => {
                    core.refuse(
                        &header,
                        NodeRefusal::FromJobOfAnother,
                        "a run message whose from_job is not a job of its sender in that task",
                    );
                    let _ = core.state.record_seen(header.id, forget_after);
                    let _ = delivery.acker.ack().await;
                    return;
                }
                Err(()) => {
                    // The server will answer again: the broker delivers it again meanwhile.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = delivery.acker.requeue().await;
                    return;
                }
            }
            // The node's own topics (secure aggregation) are for the node, never an algorithm.
            if message.topic.starts_with(secagg::wire::RESERVED_PREFIX) {
                secagg::receive(&core, &header, &message.topic, &message.body)
            } else {
                let stored = StoredMessage {
                    id: header.id,
                    from: header.sender,
                    from_job: message.from_job,
                    topic: message.topic,
                    body: message.body.into_vec(),
                };
                let limits = &core.config.limits;
                let quota = InboxQuota {
                    messages: limits.run_inbox_messages,
                    bytes: limits.run_inbox_mib.saturating_mul(1024 * 1024),
                };
                core.state.put_message(header.run, &stored, quota).map(|stored| match stored {
                Stored::New => core.notify_arrival(),
                Stored::Again => {}
                Stored::InboxFull => core.refuse(
                    &header,
                    NodeRefusal::RunInboxFull,
                    "a run message: the run's inbox is at its quota (limits.run_inbox_messages, run_inbox_mib)",
                ),
            })
            }
        }
        Payload::JobResult(result) => match core.state.subtask(header.task) {
            // A result answers one job of the subtask, the one its signed sender runs.
            Ok(Some(record)) if !record.jobs.contains(&(result.job, header.sender)) => {
                core.refuse(
                    &header,
                    NodeRefusal::ResultForAnotherJob,
                    "a result for a job of the subtask that its sender does not run",
                );
                Ok(())
            }
            Ok(Some(_)) => {
                let stored = SubtaskResult {
                    job: result.job,
                    organization: header.sender,
                    status: result.status,
                    output: result.output.into_vec(),
                    reason: result.reason,
                };
                core.state.save_subtask_result(header.task, &stored).map(|stored| {
                    if stored {
                        core.notify_arrival();
                    } else {
                        tracing::info!(task = %header.task, job = %result.job, "a second result for a subtask job ignored");
                    }
                })
            }
            Ok(None) => {
                tracing::warn!(task = %header.task, "a result for a task this node did not create");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Payload::JobStatus(status) => {
            tracing::debug!(job = %status.job, status = %status.status, "subtask status");
            Ok(())
        }
    };
    match handled.and_then(|()| core.state.record_seen(header.id, forget_after)) {
        Ok(()) => {
            let _ = delivery.acker.ack().await;
        }
        Err(e) => {
            // Not durable: let the broker deliver it again later.
            tracing::error!(id = %header.id, error = %e, "state directory failed; envelope requeued");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = delivery.acker.requeue().await;
        }
    }
}

/// Opens an envelope, fetching the collaboration's keys once if the sender's is unknown.
async fn open(core: &Core, bytes: &[u8]) -> Result<Opened, OpenError> {
    // Job starts are recognised by job id instead (see `jobs`), so that a redelivered one can
    // re-send its stored result.
    // A header that does not parse fails `open` with the same format error.
    let header = envelope::peek_header(bytes, core.policy.max_len).ok();
    let is_start = header.as_ref().is_some_and(|h| h.kind == Kind::JobStart);
    let attempt = |core: &Core| {
        let seen = |id: MessageId, now: Timestamp| -> Result<bool, ReplayGuardError> {
            Ok(core.state.seen(id, now))
        };
        // A job start is recognised by its job id (`jobs::accept`), every other envelope by its
        // id in the persistent guard, recorded once its effect is durable.
        let replay = if is_start { Replay::Unchecked } else { Replay::CheckOnly(&seen) };
        envelope::open_with(bytes, &core.me, &core.peers, replay, &core.policy, Timestamp::now())
    };
    match (attempt(core), header) {
        (Err(OpenError::UnknownSenderKey { .. }), Some(header)) => {
            // The key may be one this node has not fetched yet. While the server does not
            // answer, hold the delivery instead of refusing it: an outage must not turn into lost
            // work. A node that stops meanwhile leaves it to the broker (see `handle`).
            let mut backoff = Duration::from_millis(250);
            while !core.refresh_keys(header.collaboration).await && !core.stopping() {
                core.tally.key_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            attempt(core)
        }
        (other, _) => other,
    }
}

async fn handle_control(core: &Core, delivery: Delivery) {
    let user = delivery.user_id.clone();
    if user.as_deref() != Some(core.config.broker.server_user.as_str()) {
        tracing::warn!(user = user.as_deref().unwrap_or(""), "control message not from the server; refused");
        let _ = delivery.acker.reject().await;
        return;
    }
    match Control::from_bytes(&delivery.data) {
        Ok(Control::Kill { task, .. }) => jobs::kill_task(core, task, "killed through the server").await,
        Ok(Control::RunFinished { run }) => jobs::finish_run(core, run).await,
        Err(e) => tracing::warn!(error = %e, "unreadable control message dropped"),
    }
    let _ = delivery.acker.ack().await;
}
