//! One-time enrollment tokens: an organization's administrator creates one for a node name; the
//! node trades it, once, for its registration (`POST /enroll`, whose token is its only
//! credential).

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret as _, SecretString};

use super::{AppError, ErrorCode, Principal, State, db, logins, nodes};
use crate::contract::{EnrolledOrganization, NodeRegistration};
use crate::db::{directory, enrollments};
use crate::ids::OrgId;

/// How long a token is valid unless asked otherwise: a day.
const DEFAULT_VALID_SECS: u64 = 24 * 3600;
/// The longest a token may be valid: a week.
const MAX_VALID_SECS: u64 = 7 * 24 * 3600;

/// A token created: what the API answers (and the dashboard shows), once.
#[derive(Debug, serde::Serialize)]
pub struct Created {
    /// `fedq_e_…`.
    pub token: String,
    /// The organization.
    pub organization: OrgId,
    /// Its name.
    pub organization_name: String,
    /// The node's name.
    pub node_name: String,
    /// When the token stops working.
    pub expires_at: SystemTime,
}

/// Creates a token for node `name` of `org`, if `principal` is root or an administrator of
/// `org` (the API and the dashboard).
pub async fn create_token(
    principal: &Principal,
    org: OrgId,
    name: &str,
    valid_secs: Option<u64>,
    state: &State,
) -> Result<Created, AppError> {
    principal.require_admin_of(org)?;
    let user = principal.require_user()?;
    let name = name.trim();
    // The name goes into the node's settings, where it names Docker objects.
    if name.is_empty()
        || name.len() > 40
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AppError::invalid("a node name is 1 to 40 letters, digits, '-' or '_'"));
    }
    let valid = valid_secs.unwrap_or(DEFAULT_VALID_SECS);
    if !(60..=MAX_VALID_SECS).contains(&valid) {
        return Err(AppError::invalid(format!(
            "valid_secs is 60 to {MAX_VALID_SECS} (a week); enroll the node within that time"
        )));
    }
    let client = db(state).await?;
    let Some(organization) = directory::org(&**client, org).await? else {
        return Err(AppError::not_found(format!("organization {org}")));
    };
    let token = logins::new_enrollment_token();
    let expires_at = SystemTime::now() + Duration::from_secs(valid);
    enrollments::insert(
        &**client,
        org,
        name,
        &logins::secret_hash(token.expose_secret()),
        &user.username,
        expires_at,
    )
    .await?;
    tracing::info!(%org, node = name, by = %user.username, "enrollment token created");
    Ok(Created {
        token: token.expose_secret().to_owned(),
        organization: org,
        organization_name: organization.name,
        node_name: name.to_owned(),
        expires_at,
    })
}

/// Trades a token for the node's registration, once. A registration that fails gives the
/// token back, so that the enrollment can be retried.
pub async fn enroll(token: &SecretString, state: &State) -> Result<NodeRegistration, AppError> {
    let client = db(state).await?;
    let hash = logins::secret_hash(token.expose_secret());
    let Some(claim) = enrollments::take(&**client, &hash).await.map_err(AppError::from)? else {
        return Err(AppError::new(
            ErrorCode::InvalidToken,
            "this enrollment token is unknown, already used or expired; ask an administrator of your \
             organization for a new one (`fedq admin enrollment create`)",
        ));
    };
    let mut registration = match nodes::register(state, claim.organization, &claim.node_name).await {
        Ok(registration) => registration,
        Err(e) => {
            enrollments::give_back(&**client, claim.id).await.map_err(AppError::from)?;
            return Err(e);
        }
    };
    enrollments::enrolled(&**client, claim.id, registration.node.id).await.map_err(AppError::from)?;
    let organization = directory::org(&**client, claim.organization).await.map_err(AppError::from)?;
    registration.organization = Some(EnrolledOrganization {
        id: claim.organization,
        name: organization.as_ref().map(|o| o.name.clone()).unwrap_or_default(),
        public_key: organization.and_then(|o| o.public_key),
    });
    // The CA the broker's certificate chains to, as the server knows it: the node gets it over
    // the TLS connection it already verified.
    if let Some(path) = &state.config.broker.tls.ca_file {
        match std::fs::read_to_string(path) {
            Ok(pem) => registration.broker.ca_pem = Some(pem),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "could not read the broker's CA for an enrollment")
            }
        }
    }
    tracing::info!(node = %registration.node.id, org = %claim.organization, "node enrolled");
    Ok(registration)
}
