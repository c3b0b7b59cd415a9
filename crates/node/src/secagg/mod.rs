//! Secure aggregation, a service of the node to the algorithms of a run: every participating
//! job contributes a vector of integers modulo 2^64 for a named round, and the aggregator's job
//! receives only their sum (`docs/protocol.md`, "Secure aggregation").
//!
//! The algorithm never holds a key. Each participating node makes an X25519 key pair for the
//! run ([`store`]), sends its public key to each other participant in a sealed, signed run
//! message, masks its job's vector with one mask per peer ([`mask`]) and sends the masked
//! vector to the aggregator's organization, whose node sums the parts when every participant's
//! is there. The node-to-node messages ([`wire`]) use topics no algorithm can send or take.

pub(crate) mod mask;
pub(crate) mod store;
pub(crate) mod wire;

use std::time::Duration;

use x25519_dalek::PublicKey;

use self::mask::{Participants, Round};
use self::store::{Kept, RunSums};
use self::wire::{KeyOffer, Part};
use crate::active::ActiveJob;
use crate::contract::NodeRefusal;
use crate::envelope::Header;
use crate::ids::OrgId;
use crate::run_messages::{self, SendError};
use crate::shared::Core;
use crate::state::InboxQuota;

/// Why a contribution or a sum cannot be given.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SumError {
    /// The request names no round, a malformed one, or values out of range.
    #[error("{0}")]
    Malformed(String),
    /// Fewer participants than this node's policy takes.
    #[error(
        "a round of {given} participants: this node contributes to another organization's rounds \
         only with at least {min} (policy.min_organizations), so that a sum is never one other \
         party's view of its data"
    )]
    TooFew {
        /// As asked.
        given: usize,
        /// This node's minimum.
        min: usize,
    },
    /// An organization of the round has no job in the run.
    #[error("organization {0} has no job in this run: it cannot take part in or aggregate a round")]
    NotInRun(OrgId),
    /// This node contributed other values (or to another aggregator) to the round already.
    #[error(
        "this organization contributed other values to round {0} already: a round takes one contribution \
         per organization (the same values may be sent again)"
    )]
    AlreadyContributed(Round),
    /// Someone did not answer in time.
    #[error("round {round}: no {what} from organization(s) {} after {waited} s; ask again, or fail the round", list(.missing))]
    Incomplete {
        /// The round.
        round: Round,
        /// What is missing: a run key or a contribution.
        what: &'static str,
        /// From whom.
        missing: Vec<OrgId>,
        /// How long this call waited.
        waited: u64,
    },
    /// A participant's contribution is for another set of participants or of another length.
    #[error("round {round}: organization {org}'s contribution {why}; the round cannot be summed")]
    Disagree {
        /// The round.
        round: Round,
        /// Whose.
        org: OrgId,
        /// How it differs.
        why: String,
    },
    /// The run's secure-sum state is at the run inbox's quota.
    #[error(
        "the run's secure-sum contributions are at the run inbox's quota (limits.run_inbox_messages, run_inbox_mib)"
    )]
    Full,
    /// A peer's key cannot be used.
    #[error("{0}")]
    WeakKey(#[from] mask::WeakKey),
    /// A message did not leave.
    #[error("{0}")]
    Send(#[from] SendError),
    /// The state directory failed.
    #[error("the node's state directory failed: {0}")]
    Io(#[from] std::io::Error),
}

fn list(orgs: &[OrgId]) -> String {
    orgs.iter().map(OrgId::to_string).collect::<Vec<_>>().join(", ")
}

/// What a job asks to contribute.
pub(crate) struct Contribution {
    pub(crate) round: Round,
    pub(crate) participants: Participants,
    pub(crate) aggregator: OrgId,
    pub(crate) values: Vec<u64>,
    pub(crate) wait: Duration,
}

/// Checks a request's round name and participants (which the endpoint then passes on).
pub(crate) fn parse_round(round: &str, participants: Vec<OrgId>) -> Result<(Round, Participants), SumError> {
    let round = Round::parse(round).map_err(SumError::Malformed)?;
    let participants = Participants::new(participants)
        .ok_or_else(|| SumError::Malformed("an organization is named twice among the participants".into()))?;
    Ok((round, participants))
}

/// Sends this node's masked contribution of `job` for a round to its aggregator, once every
/// peer's run key is here (waiting for them up to `wait`; nothing is sent before, and the call
/// can be made again).
pub(crate) async fn contribute(core: &Core, job: &ActiveJob, ask: Contribution) -> Result<(), SumError> {
    let me = core.org();
    let Contribution { round, participants, aggregator, mut values, wait } = ask;
    if !participants.contains(me) {
        return Err(SumError::Malformed(format!(
            "this organization ({me}) is not among the round's participants"
        )));
    }
    if values.is_empty() || values.len() > wire::MAX_VALUES {
        return Err(SumError::Malformed(format!("a contribution has 1 to {} values", wire::MAX_VALUES)));
    }
    // As for tasks (`policy.min_organizations`): a sum over too few tells the others' parts.
    // Exempt only when every organization the job works for is this one.
    let min = core.rules().policy.min_organizations;
    if job.principals().iter().any(|&p| p != me) && participants.orgs().len() < min {
        return Err(SumError::TooFew { given: participants.orgs().len(), min });
    }
    for &org in participants.orgs().iter().chain([&aggregator]) {
        if org != me && !run_messages::reachable(core, job, org).await {
            return Err(SumError::NotInRun(org));
        }
    }
    let sums = RunSums::of(&core.state, job.record.run);
    let secret = sums.own_secret()?;
    let peers: Vec<OrgId> = participants.orgs().iter().copied().filter(|&o| o != me).collect();
    let offer = KeyOffer::new(PublicKey::from(&secret).to_bytes()).encode();
    for &peer in &peers {
        if !sums.key_sent(peer) {
            run_messages::send(core, job, peer, wire::KEY_TOPIC.into(), offer.clone()).await?;
            sums.mark_key_sent(peer)?;
        }
    }
    // Every peer's key, or who is missing when the wait is over.
    let deadline = tokio::time::Instant::now() + wait;
    let mut arrivals = core.arrivals.subscribe();
    let keys = loop {
        arrivals.borrow_and_update();
        let mut keys = Vec::with_capacity(peers.len());
        let mut missing = Vec::new();
        for &peer in &peers {
            match sums.key(peer)? {
                Some(key) => keys.push((peer, PublicKey::from(key))),
                None => missing.push(peer),
            }
        }
        if missing.is_empty() {
            break keys;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SumError::Incomplete { round, what: "run key", missing, waited: wait.as_secs() });
        }
        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
    };
    let run = job.record.run;
    let seeds = keys
        .iter()
        .map(|(peer, public)| {
            Ok((*peer, mask::pair_seed(&secret, public, run, &round, &participants, me, *peer)?))
        })
        .collect::<Result<Vec<_>, mask::WeakKey>>()?;
    mask::apply(me, &mut values, &seeds);
    let part = Part { round: round.to_string(), participants: participants.orgs().to_vec(), values }.encode();
    // Kept before it leaves and never taken back: asked again, the node sends the same bytes
    // (a lost or doubtful send is repaired, the aggregator keeps one copy) and refuses others,
    // which under the same masks would tell their difference.
    if sums.keep_sent(&round, aggregator, &part)? == Kept::Conflict {
        return Err(SumError::AlreadyContributed(round));
    }
    match aggregator == me {
        // The aggregator's job is here: the part goes straight into the run's files.
        true => match keep_part(core, &sums, &round, me, &part)? {
            Kept::Full => Err(SumError::Full),
            _ => Ok(()),
        },
        false => run_messages::send(core, job, aggregator, wire::PART_TOPIC.into(), part)
            .await
            .map(drop)
            .map_err(SumError::from),
    }
}

fn keep_part(core: &Core, sums: &RunSums, round: &Round, from: OrgId, part: &[u8]) -> Result<Kept, SumError> {
    let kept = sums.put_part(round, from, part, quota(core))?;
    if kept == Kept::New {
        core.notify_arrival();
    }
    Ok(kept)
}

fn quota(core: &Core) -> InboxQuota {
    let limits = &core.config.limits;
    InboxQuota {
        messages: limits.run_inbox_messages,
        bytes: limits.run_inbox_mib.saturating_mul(1024 * 1024),
    }
}

/// The sum of a round's contributions at this node, the aggregator's, once every participant's
/// is here (waiting up to `wait`).
pub(crate) async fn sum(
    core: &Core,
    job: &ActiveJob,
    round: Round,
    participants: Participants,
    wait: Duration,
) -> Result<Vec<u64>, SumError> {
    let sums = RunSums::of(&core.state, job.record.run);
    let deadline = tokio::time::Instant::now() + wait;
    let mut arrivals = core.arrivals.subscribe();
    loop {
        arrivals.borrow_and_update();
        let mut parts = Vec::with_capacity(participants.orgs().len());
        let mut missing = Vec::new();
        for &org in participants.orgs() {
            let Some(bytes) = sums.part(&round, org)? else {
                missing.push(org);
                continue;
            };
            // Checked when it arrived; read again from the node's own disk.
            let (_, theirs, values) = Part::decode(&bytes, org).map_err(|e| SumError::Disagree {
                round: round.clone(),
                org,
                why: e.to_string(),
            })?;
            if theirs != participants {
                let why = format!("is for the participants {}", list(theirs.orgs()));
                return Err(SumError::Disagree { round, org, why });
            }
            parts.push(values);
        }
        if missing.is_empty() {
            let len = parts[0].len();
            if let Some((i, _)) = parts.iter().enumerate().find(|(_, p)| p.len() != len) {
                let why = format!("has {} values where another has {len}", parts[i].len());
                return Err(SumError::Disagree { round, org: participants.orgs()[i], why });
            }
            return Ok(mask::sum(len, parts.iter().map(Vec::as_slice)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SumError::Incomplete {
                round,
                what: "contribution",
                missing,
                waited: wait.as_secs(),
            });
        }
        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
    }
}

/// Handles a run message on one of the node's own topics from `header.sender`, already checked
/// as the sender's (signature, run, from_job). Refusals are logged and counted; nothing reaches
/// an algorithm.
pub(crate) fn receive(core: &Core, header: &Header, topic: &str, body: &[u8]) -> std::io::Result<()> {
    let sums = RunSums::of(&core.state, header.run);
    let kept = match topic {
        wire::KEY_TOPIC => KeyOffer::decode(body).map(|public| sums.put_key(header.sender, public)),
        wire::PART_TOPIC => Part::decode(body, header.sender)
            .map(|(round, ..)| sums.put_part(&round, header.sender, body, quota(core))),
        other => Err(wire::WireError::Undecodable(format!("an unknown topic of the node's, {other:?}"))),
    };
    let kept = match kept {
        Ok(kept) => kept?,
        Err(e) => {
            core.refuse(header, NodeRefusal::SecureSumMalformed, &format!("a secure-sum message: {e}"));
            return Ok(());
        }
    };
    match kept {
        Kept::New => core.notify_arrival(),
        Kept::Again => {}
        Kept::Conflict => core.refuse(
            header,
            NodeRefusal::SecureSumAgain,
            "a second, different secure-sum key or contribution from the same organization",
        ),
        Kept::Full => core.refuse(
            header,
            NodeRefusal::RunInboxFull,
            "a secure-sum contribution: the run's inbox is at its quota (limits.run_inbox_messages, run_inbox_mib)",
        ),
    }
    Ok(())
}
