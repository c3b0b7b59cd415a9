//! Organizations and collaborations by name or id, as the server shows them to this session:
//! what lets the command line and the Python client take a name wherever an id is accepted.

use crate::contract::{Collaboration, Organization};
use crate::{Client, ClientError};

impl Client {
    /// The organizations this session sees.
    pub async fn organizations(&self) -> Result<Vec<Organization>, ClientError> {
        self.fetch(reqwest::Method::GET, "/organizations", None::<&()>).await
    }

    /// The collaborations this session sees.
    pub async fn collaborations(&self) -> Result<Vec<Collaboration>, ClientError> {
        self.fetch(reqwest::Method::GET, "/collaborations", None::<&()>).await
    }

    /// The organization whose id or name is `name_or_id`, among those this session sees.
    pub async fn organization(&self, name_or_id: &str) -> Result<Organization, ClientError> {
        let found =
            self.organizations().await?.into_iter().find(|o| named(&o.id.to_string(), &o.name, name_or_id));
        found.ok_or_else(|| ClientError::NotSeen { what: "organization", name: name_or_id.to_owned() })
    }

    /// The collaboration whose id or name is `name_or_id`, among those this session sees.
    pub async fn collaboration(&self, name_or_id: &str) -> Result<Collaboration, ClientError> {
        let found =
            self.collaborations().await?.into_iter().find(|c| named(&c.id.to_string(), &c.name, name_or_id));
        found.ok_or_else(|| ClientError::NotSeen { what: "collaboration", name: name_or_id.to_owned() })
    }
}

/// Whether an item with `id` and `name` is the one `name_or_id` means.
fn named(id: &str, name: &str, name_or_id: &str) -> bool {
    id == name_or_id || name == name_or_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_named_by_its_id_or_its_name_and_a_miss_says_so() {
        let id = "0b0e8c7e-3f5a-4e59-9d0b-5f2e54a1c001";
        assert!(named(id, "registry-0", "registry-0"));
        assert!(named(id, "registry-0", id));
        assert!(!named(id, "registry-0", "registry"), "a name matches whole");
        let missed = ClientError::NotSeen { what: "organization", name: "nobody".into() };
        assert_eq!(
            missed.to_string(),
            "no organization named \"nobody\" that this user can see (give its name or its id)"
        );
    }
}
