//! A key is trusted on first use or by a rotation only once the transparency log proves that it
//! logged it: the listed key's leaf (`KeyPublished`, or `KeyRotated` to it) must be included in a
//! head signed by the log's key, and that head must extend the newest one this client verified
//! before (kept in its trust store). A server that shows one party a key it never logged, or a
//! log of its own, is then caught: an unlogged key is refused here, and a logged one is seen by
//! the organization's own monitor, which alarms on a key it did not publish.

use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use fedq_transparency::{Event, EventLeaf, Leaf, leaf_hash, verify_consistency, verify_inclusion};

use crate::audit::AuditError;
use crate::ids::OrgId;
use crate::keys::{LogAnchor, PublicKey, TrustError};
use crate::{Client, ClientError};

/// How long a leaf not yet in a signed head is waited for: the log sequences leaves every
/// `transparency.sequence_interval_ms` (a second at most, by default).
const SEQUENCING_WAIT: Duration = Duration::from_secs(15);

impl Client {
    /// Proves that the log holds `leaf` (hex, as the server lists it for `offered`) as the event
    /// that made `offered` `org`'s key. `Ok(Err(_))`: not proven, with why; `Err(_)`: the server
    /// could not be asked.
    pub(crate) async fn prove_key_logged(
        &self,
        org: OrgId,
        offered: &PublicKey,
        leaf: Option<&str>,
    ) -> Result<Result<(), TrustError>, ClientError> {
        let not = |why: String| Ok(Err(TrustError::NotLogged { org, offered: offered.id(), why }));
        let Some(bytes) = leaf.and_then(|l| hex::decode(l).ok()) else {
            return not("the server lists no log leaf for it".into());
        };
        let id = *offered.id().as_bytes();
        let logs_it = match Leaf::decode(&bytes) {
            Ok(Leaf::Event(EventLeaf { organization, event, .. })) if organization == org => match event {
                Event::KeyPublished { key } => key == id,
                Event::KeyRotated { new, .. } => new == id,
                _ => false,
            },
            _ => false,
        };
        if !logs_it {
            return not("the leaf the server lists for it logs something else".into());
        }
        let hash = leaf_hash(&bytes);
        // One proof at a time, so that the head recorded always extends the one before.
        let _one = self.log_lock.lock().await;
        let anchor = self.trust.log_anchor();
        let key = match anchor {
            Some(anchor) => match VerifyingKey::from_bytes(&anchor.key) {
                Ok(key) => key,
                Err(_) => return not("the log key in the trust store is not an Ed25519 key".into()),
            },
            // The log's key on first use, like the first key of an organization; a node pins it
            // from its settings, and `fedq audit --log-key` compares it with one given out of band.
            None => match self.log_key().await {
                Ok(key) => key,
                Err(e) => return answer(e, not),
            },
        };
        let deadline = tokio::time::Instant::now() + SEQUENCING_WAIT;
        loop {
            let head = match self.log_head(&key, None).await {
                Ok(head) => head,
                Err(e) => return answer(e, not),
            };
            let (size, root) = (head.head.size, head.head.root);
            if let Some(seen) = anchor.filter(|a| a.size > 0) {
                if size < seen.size {
                    return not(format!(
                        "the log's newest head has {size} leaves, fewer than the {} this client verified before",
                        seen.size
                    ));
                }
                let proof = match self.log_consistency(seen.size, size).await {
                    Ok(proof) => proof,
                    Err(e) => return answer(e, not),
                };
                if verify_consistency(seen.size, size, &proof, &seen.root, &root).is_err() {
                    return not(format!(
                        "the log's head of {size} leaves does not extend the head of {} this client verified \
                         before: the server shows different logs to different parties",
                        seen.size
                    ));
                }
            }
            match self.log_inclusion(&hash, size).await {
                Ok(Some((index, path))) => {
                    if verify_inclusion(&hash, index, size, &path, &root).is_err() {
                        return not(format!(
                            "the inclusion proof of leaf {index} does not lead to the signed head"
                        ));
                    }
                    self.trust.record_log(LogAnchor { key: key.to_bytes(), size, root })?;
                    return Ok(Ok(()));
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(None) => {
                    return not(format!("no signed head of the log includes its leaf ({size} leaves)"));
                }
                Err(e) => return answer(e, not),
            }
        }
    }
}

/// A log that misbehaved (bad signature, malformed proof) proves nothing; a server that did not
/// answer is an error of its own.
fn answer(
    e: AuditError,
    not: impl Fn(String) -> Result<Result<(), TrustError>, ClientError>,
) -> Result<Result<(), TrustError>, ClientError> {
    match e {
        AuditError::Client(e) => Err(e),
        other => not(other.to_string()),
    }
}
