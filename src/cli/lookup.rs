//! Organizations and collaborations named by name or id, as the server shows them to this
//! session: what lets every command take a name wherever an id is accepted.

use serde_json::Value;

use super::CliError;
use crate::client::Client;

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

/// The organization named `name_or_id` as the server shows it.
pub async fn organization(client: &Client, name_or_id: &str) -> Result<Value, CliError> {
    find(&client.get("/organizations").await?, name_or_id, "name")
        .ok_or_else(|| not_seen("organization", name_or_id))
}

/// The id of the organization named `name_or_id`.
pub async fn organization_id(client: &Client, name_or_id: &str) -> Result<crate::ids::OrgId, CliError> {
    id_of(&organization(client, name_or_id).await?)
        .parse()
        .map_err(|_| CliError::BadInput(format!("the server gave no id for organization {name_or_id:?}")))
}

/// The id of the collaboration named `name_or_id`.
pub async fn collaboration_id(
    client: &Client,
    name_or_id: &str,
) -> Result<crate::ids::CollaborationId, CliError> {
    id_of(&collaboration(client, name_or_id).await?)
        .parse()
        .map_err(|_| CliError::BadInput(format!("the server gave no id for collaboration {name_or_id:?}")))
}

/// The collaboration named `name_or_id` as the server shows it.
pub async fn collaboration(client: &Client, name_or_id: &str) -> Result<Value, CliError> {
    find(&client.get("/collaborations").await?, name_or_id, "name")
        .ok_or_else(|| not_seen("collaboration", name_or_id))
}

/// `answer` (a list of users or nodes, or one) with the name of each one's organization beside
/// its id, as `organization_name`, where this session sees the organization.
pub async fn with_organization_names(client: &Client, mut answer: Value) -> Result<Value, CliError> {
    let orgs = client.get("/organizations").await?;
    let items: Vec<&mut Value> = match &mut answer {
        Value::Array(items) => items.iter_mut().collect(),
        item => vec![item],
    };
    for item in items {
        let name =
            item["organization"].as_str().and_then(|id| find(&orgs, id, "name")).map(|o| o["name"].clone());
        if let Some(name) = name {
            item["organization_name"] = name;
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
