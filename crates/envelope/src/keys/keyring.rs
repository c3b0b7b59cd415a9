//! Who I am (my organization's private keys) and whom I know (other organizations' public keys).

use std::collections::HashMap;

use super::{KeyId, OrgKey, PublicKey};
use crate::ids::OrgId;

/// Where the public keys of senders come from when an envelope is opened.
///
/// A trait so that a node can back it with keys fetched from the server and cached, pinned by
/// fingerprint; [`Keyring`] is the in-memory implementation.
pub trait SenderKeys {
    /// The public key `key` of organization `org`, if it is known and still trusted.
    fn sender_key(&self, org: OrgId, key: &KeyId) -> Option<PublicKey>;
}

/// Public keys of organizations, several per organization while a key is being rotated.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<OrgId, Vec<PublicKey>>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` for `org`, beside the keys it already has.
    pub fn insert(&mut self, org: OrgId, key: PublicKey) {
        let keys = self.keys.entry(org).or_default();
        if !keys.iter().any(|k| k.id() == key.id()) {
            keys.push(key);
        }
    }

    /// Stops trusting key `id` of `org`. Returns whether it was there.
    pub fn remove(&mut self, org: OrgId, id: &KeyId) -> bool {
        let Some(keys) = self.keys.get_mut(&org) else { return false };
        let before = keys.len();
        keys.retain(|k| &k.id() != id);
        before != keys.len()
    }

    /// The newest key trusted for `org`: the one to seal new envelopes to.
    pub fn current(&self, org: OrgId) -> Option<&PublicKey> {
        self.keys.get(&org).and_then(|keys| keys.last())
    }
}

impl SenderKeys for Keyring {
    fn sender_key(&self, org: OrgId, key: &KeyId) -> Option<PublicKey> {
        self.keys.get(&org)?.iter().find(|k| &k.id() == key).cloned()
    }
}

/// An organization's own identity: its id and its private keys, newest first. Older keys stay
/// so that envelopes sealed to them before a rotation can still be opened.
#[derive(Debug)]
pub struct Identity {
    org: OrgId,
    keys: Vec<OrgKey>,
}

impl Identity {
    /// An identity with one key.
    pub fn new(org: OrgId, key: OrgKey) -> Self {
        Self { org, keys: vec![key] }
    }

    /// An identity whose current key is `current`, with `previous` keys (newest first) kept for
    /// opening envelopes sealed to them before a rotation.
    pub fn with_previous(org: OrgId, current: OrgKey, previous: Vec<OrgKey>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous);
        Self { org, keys }
    }

    /// Makes `key` the current key; the previous ones remain for opening.
    pub fn rotate_to(&mut self, key: OrgKey) {
        self.keys.insert(0, key);
    }

    /// The organization.
    pub fn org(&self) -> OrgId {
        self.org
    }

    /// The key used to seal and sign.
    pub fn current(&self) -> &OrgKey {
        &self.keys[0]
    }

    /// Every key of the identity, newest first.
    pub fn keys(&self) -> impl Iterator<Item = &OrgKey> {
        self.keys.iter()
    }

    /// The private key named `id`, if this identity holds it.
    pub fn key(&self, id: &KeyId) -> Option<&OrgKey> {
        self.keys.iter().find(|k| &k.id() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_holds_several_keys_per_organization() {
        let org = OrgId::new();
        let (old, new) = (OrgKey::generate(), OrgKey::generate());
        let mut ring = Keyring::new();
        ring.insert(org, old.public().clone());
        ring.insert(org, new.public().clone());
        ring.insert(org, new.public().clone());
        assert_eq!(ring.current(org).unwrap().id(), new.id());
        assert!(ring.sender_key(org, &old.id()).is_some());
        assert!(ring.sender_key(OrgId::new(), &old.id()).is_none());
        assert!(ring.remove(org, &old.id()));
        assert!(ring.sender_key(org, &old.id()).is_none());
        assert!(!ring.remove(org, &old.id()));
    }

    #[test]
    fn rotation_keeps_the_old_private_key_for_opening() {
        let old = OrgKey::generate();
        let old_id = old.id();
        let mut me = Identity::new(OrgId::new(), old);
        let new = OrgKey::generate();
        let new_id = new.id();
        me.rotate_to(new);
        assert_eq!(me.current().id(), new_id);
        assert!(me.key(&old_id).is_some());
    }
}
