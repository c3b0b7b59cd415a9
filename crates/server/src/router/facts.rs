//! The routing facts cache: what the router reads about a task, its sender and recipient, kept
//! a few seconds.

use std::time::Duration;

use crate::db::{DbError, routing};
use crate::envelope::Header;

/// Routing facts read recently, by everything they depend on.
///
/// Traffic within a run repeats the same (task, sender, recipient, key, publisher) many times,
/// and reading the facts is the router's most expensive query. Cached facts are at most
/// `FACTS_TTL` old, so a membership change, a key retirement or a node revocation reaches
/// routing within that time (a revoked node is cut off at the broker at once anyway).
#[derive(Default)]
pub(super) struct FactsCache {
    entries: std::sync::Mutex<std::collections::HashMap<FactsKey, (tokio::time::Instant, routing::Facts)>>,
}

type FactsKey =
    (crate::ids::TaskId, crate::ids::OrgId, crate::ids::OrgId, crate::keys::KeyId, Option<String>, i64);

const FACTS_TTL: Duration = Duration::from_secs(5);
const FACTS_MAX: usize = 10_000;

impl FactsCache {
    pub(super) async fn get_or_read(
        &self,
        db: &impl deadpool_postgres::GenericClient,
        header: &Header,
        broker_user: Option<&str>,
    ) -> Result<routing::Facts, DbError> {
        // The signing key's validity depends on the creation time, so it is part of the key
        // (to the second: envelopes of one burst share it).
        let key: FactsKey = (
            header.task,
            header.sender,
            header.recipient,
            header.sender_key,
            broker_user.map(str::to_owned),
            header.created_at.as_millis() / 1000,
        );
        let now = tokio::time::Instant::now();
        if let Some((at, facts)) = self.entries.lock().expect("not poisoned").get(&key)
            && now.duration_since(*at) < FACTS_TTL
        {
            return Ok(facts.clone());
        }
        let facts = routing::facts(db, header, broker_user).await?;
        // Only facts about an existing task are kept: a task created a moment later must be
        // routable at once.
        if facts.task.is_some() {
            let mut entries = self.entries.lock().expect("not poisoned");
            if entries.len() >= FACTS_MAX {
                entries.retain(|_, (at, _)| now.duration_since(*at) < FACTS_TTL);
                if entries.len() >= FACTS_MAX {
                    entries.clear();
                }
            }
            entries.insert(key, (now, facts.clone()));
        }
        Ok(facts)
    }
}
