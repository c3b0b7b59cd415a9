//! Organizations and collaborations named by name or id, as the server shows them to this
//! session: what lets every command take a name wherever an id is accepted.

use serde_json::Value;

use super::CliError;
use crate::client::{Client, ClientError};

/// The item of `list` whose id or `name_field` is `name_or_id`.
pub fn find(list: &Value, name_or_id: &str, name_field: &str) -> Option<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|o| o["id"].as_str() == Some(name_or_id) || o[name_field].as_str() == Some(name_or_id))
        .cloned()
}

/// The `id` field of an item the server listed.
pub fn id_of(item: &Value) -> String {
    item["id"].as_str().unwrap_or_default().to_owned()
}

/// The error for a name that matches nothing this session can see.
pub fn not_seen(what: &str, name: &str) -> CliError {
    CliError::BadInput(format!(
        "no {what} named {name:?} that this user can see (give its name or its id, as `fedq admin … list` \
         shows them)"
    ))
}

/// The error of a lookup, with the command line's hint for a name that matches nothing.
fn looked_up(e: ClientError) -> CliError {
    match e {
        ClientError::NotSeen { what, name } => not_seen(what, &name),
        e => e.into(),
    }
}

/// The id of the organization named `name_or_id` (`fedq_client::Client::organization`).
pub async fn organization_id(client: &Client, name_or_id: &str) -> Result<crate::ids::OrgId, CliError> {
    Ok(client.organization(name_or_id).await.map_err(looked_up)?.id)
}

/// The id of the collaboration named `name_or_id` (`fedq_client::Client::collaboration`).
pub async fn collaboration_id(
    client: &Client,
    name_or_id: &str,
) -> Result<crate::ids::CollaborationId, CliError> {
    Ok(client.collaboration(name_or_id).await.map_err(looked_up)?.id)
}

/// `answer` (a list of users or nodes, or one) with the name of each one's organization beside
/// its id, as `organization_name`, where this session sees the organization.
pub async fn with_organization_names(client: &Client, mut answer: Value) -> Result<Value, CliError> {
    let orgs = client.organizations().await?;
    let items: Vec<&mut Value> = match &mut answer {
        Value::Array(items) => items.iter_mut().collect(),
        item => vec![item],
    };
    for item in items {
        let id = item["organization"].as_str().unwrap_or_default();
        if let Some(org) = orgs.iter().find(|o| o.id.to_string() == id) {
            item["organization_name"] = Value::from(org.name.clone());
        }
    }
    Ok(answer)
}

/// A refused key's error with each organization's name put beside its id (`organization
/// registry-b (6c5b…)`), as the server names them; the commands it suggests keep the ids.
pub async fn naming_organizations<T>(client: &Client, outcome: Result<T, CliError>) -> Result<T, CliError> {
    use crate::client::ClientError;
    let err = match outcome {
        Err(
            err @ (CliError::Trust(_)
            | CliError::Client(ClientError::Trust(_) | ClientError::WrongKey { .. })),
        ) => err,
        other => return other,
    };
    Err(CliError::KeyRefused(client.naming_organizations(&err.to_string()).await))
}
