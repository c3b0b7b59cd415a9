//! Large request bodies in flight. A task's body carries every job's sealed input, up to
//! `http.max_body_bytes` (64 MiB), and is held in memory while it is parsed and routed; any
//! member may send one, so without a bound a few members posting at once take the server's
//! memory. Each such body reserves its size, in MiB rounded up, from `http.body_budget_mib` in
//! all, and at most half of it per organization (root counts as one), before a byte of it is
//! read; a body that waits more than [`WAIT`] for its reservation is answered `unavailable`,
//! and one larger than an organization's share can never be admitted, so it is answered
//! `too_large` at once, naming the setting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::AppError;
use crate::ids::OrgId;

/// How long a body waits for its share of the budget.
pub const WAIT: Duration = Duration::from_secs(10);

/// The budget of large bodies in flight.
#[derive(Debug)]
pub struct BodyBudget {
    total: Arc<Semaphore>,
    share: u32,
    by_org: Mutex<HashMap<Option<OrgId>, Arc<Semaphore>>>,
}

/// A body's reservation, released when dropped (after the handler).
#[derive(Debug)]
pub struct Reservation {
    _total: OwnedSemaphorePermit,
    _org: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// A budget of `mib` MiB in all, half of it per organization.
    pub fn new(mib: u32) -> Self {
        let mib = mib.max(2);
        Self {
            total: Arc::new(Semaphore::new(mib as usize)),
            share: mib / 2,
            by_org: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves `bytes` for a body of `org`'s (`None` for root), waiting at most `wait`.
    pub async fn reserve(
        &self,
        org: Option<OrgId>,
        bytes: u64,
        wait: Duration,
    ) -> Result<Reservation, AppError> {
        let mib = u32::try_from(bytes.div_ceil(1024 * 1024)).unwrap_or(u32::MAX).max(1);
        if mib > self.share {
            return Err(AppError::too_large(format!(
                "a body of {mib} MiB is more than an organization may have in flight ({} MiB, half of \
                 http.body_budget_mib): send less at once, or have the operator raise http.body_budget_mib",
                self.share
            )));
        }
        let own = {
            let mut by_org = self.by_org.lock().expect("not poisoned");
            by_org.entry(org).or_insert_with(|| Arc::new(Semaphore::new(self.share as usize))).clone()
        };
        let reserve = async {
            let org = own.acquire_many_owned(mib).await.map_err(|_| AppError::internal())?;
            let total = self.total.clone().acquire_many_owned(mib).await.map_err(|_| AppError::internal())?;
            Ok(Reservation { _total: total, _org: org })
        };
        match tokio::time::timeout(wait, reserve).await {
            Ok(reserved) => reserved,
            Err(_) => Err(AppError::unavailable(
                "too many large requests in flight (http.body_budget_mib); retry in a few seconds",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn an_organization_gets_half_the_budget_and_waits_for_the_rest() {
        let budget = BodyBudget::new(8);
        let (a, b, c) = (Some(OrgId::new()), Some(OrgId::new()), Some(OrgId::new()));
        let short = Duration::from_millis(50);
        let first = budget.reserve(a, 3 * MIB, short).await.unwrap();
        let e = budget.reserve(a, 2 * MIB, short).await.unwrap_err();
        assert_eq!(e.code.as_str(), "unavailable", "a's share is 4 MiB");
        let _b = budget.reserve(b, 4 * MIB, short).await.unwrap();
        let e = budget.reserve(c, MIB + 1, short).await.unwrap_err();
        assert_eq!(e.code.as_str(), "unavailable", "1 MiB is left in all, and this rounds up to 2");
        drop(first);
        budget.reserve(c, 2 * MIB, short).await.unwrap();
        let e = budget.reserve(None, 5 * MIB, short).await.unwrap_err();
        assert_eq!((e.code.as_str(), e.status().as_u16()), ("too_large", 413));
        assert!(e.message.contains("http.body_budget_mib"), "{}", e.message);
    }
}
