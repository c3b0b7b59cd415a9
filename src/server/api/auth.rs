//! Who is calling: users log in for a bearer token, nodes present their API key. Every
//! permission rule of the API is a method of [`Principal`], so the rules are read in one place.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use warp::Filter;
use warp::http::HeaderMap;

use super::error::ApiError;
use super::{State, with_state};
use crate::ids::OrgId;
use crate::server::db::directory::{self, Node};
use crate::server::db::users::{self, Role, User};
use crate::tls::server::PeerAddr;

const USER_TOKEN_PREFIX: &str = "fedq_u_";
const NODE_KEY_PREFIX: &str = "fedq_n_";

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person.
    User(User),
    /// A node, by its API key.
    Node(Node),
}

impl Principal {
    /// The caller's organization; `None` for root administrators.
    pub fn org(&self) -> Option<OrgId> {
        match self {
            Principal::User(u) => u.organization,
            Principal::Node(n) => Some(n.organization),
        }
    }

    /// Whether the caller is a root administrator.
    pub fn is_root(&self) -> bool {
        matches!(self, Principal::User(u) if u.role == Role::Root)
    }

    /// Root only.
    pub fn require_root(&self) -> Result<(), ApiError> {
        if self.is_root() {
            Ok(())
        } else {
            Err(ApiError::forbidden("only a root administrator may do this"))
        }
    }

    /// A root administrator, or an administrator of `org`.
    pub fn require_admin_of(&self, org: OrgId) -> Result<(), ApiError> {
        match self {
            _ if self.is_root() => Ok(()),
            Principal::User(u) if u.role == Role::OrgAdmin && u.organization == Some(org) => Ok(()),
            _ => Err(ApiError::forbidden(format!("only an administrator of organization {org} may do this"))),
        }
    }

    /// An administrator of `org` who belongs to it: root is not. Used where the organization
    /// itself must act, such as publishing its key, so that the server's operator cannot.
    pub fn require_own_admin(&self, org: OrgId) -> Result<(), ApiError> {
        match self {
            Principal::User(u) if u.role == Role::OrgAdmin && u.organization == Some(org) => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "only an administrator who belongs to organization {org} may do this (not root: \
                 members trust an organization's keys because the organization itself publishes them)"
            ))),
        }
    }

    /// A person who may create tasks for their organization (researchers and organization
    /// administrators), or a node (subtasks).
    pub fn require_task_creator(&self) -> Result<OrgId, ApiError> {
        match self {
            Principal::User(u) if matches!(u.role, Role::Researcher | Role::OrgAdmin) => u
                .organization
                .ok_or_else(|| ApiError::forbidden("a user without organization cannot create tasks")),
            Principal::Node(n) => Ok(n.organization),
            _ => Err(ApiError::forbidden(
                "only researchers, organization administrators and nodes create tasks",
            )),
        }
    }

    /// A person (not a node).
    pub fn require_user(&self) -> Result<&User, ApiError> {
        match self {
            Principal::User(u) => Ok(u),
            Principal::Node(_) => Err(ApiError::forbidden("nodes may not do this")),
        }
    }

    /// A node.
    pub fn require_node(&self) -> Result<&Node, ApiError> {
        match self {
            Principal::Node(n) => Ok(n),
            Principal::User(_) => Err(ApiError::forbidden("only nodes may do this")),
        }
    }

    /// The organization whose view the caller has: `None` (everything) for root.
    pub fn scope(&self) -> Option<OrgId> {
        if self.is_root() { None } else { self.org() }
    }
}

/// A random secret of 32 bytes with a prefix telling what it is for.
fn new_secret(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    SecretString::from(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The hash stored for a token or API key. These are 256-bit random secrets, so a fast hash is
/// enough (argon2 is for passwords, which are guessable).
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A new node API key.
pub fn new_node_key() -> SecretString {
    new_secret(NODE_KEY_PREFIX)
}

/// A new one-time enrollment token.
pub fn new_enrollment_token() -> SecretString {
    new_secret("fedq_e_")
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &SecretString) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source is unavailable");
    Argon2::default()
        .hash_password_with_salt(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ApiError::internal())
}

/// Whether `password` matches the PHC string `hash` (run on the throttle's hashing threads).
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// A filter that authenticates the request or rejects it as `unauthenticated`.
pub fn authenticated(state: State) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and(with_state(state)).and_then(
        |header: Option<String>, state: State| async move {
            let token = header
                .as_deref()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(ApiError::unauthenticated)?;
            let db = super::db(&state).await?;
            let hash = secret_hash(token);
            let principal = if token.starts_with(NODE_KEY_PREFIX) {
                directory::node_by_key(&**db, &hash).await.map_err(ApiError::from)?.map(Principal::Node)
            } else if token.starts_with(USER_TOKEN_PREFIX) {
                users::session_user(&**db, &hash).await.map_err(ApiError::from)?.map(Principal::User)
            } else {
                None
            };
            principal.ok_or_else(|| warp::reject::custom(ApiError::unauthenticated()))
        },
    )
}

/// `POST /login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: SecretString,
}

/// Checks a user name and password; the same error, after the same work, whether the user
/// exists or not. `source` is the client's address, for the throttle (`throttle.rs`): over a
/// failure limit the login is refused before any work, and at most a few checks run at once.
pub async fn verify_credentials(
    state: &State,
    username: &str,
    password: &SecretString,
    source: Option<IpAddr>,
) -> Result<User, ApiError> {
    state.throttle.admit(username, source)?;
    let db = super::db(state).await?;
    let found = users::by_username(&**db, username).await.map_err(ApiError::from)?;
    drop(db);
    // Verify against a dummy hash when the user does not exist, so timing does not reveal which
    // user names exist.
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, dummy_hash().to_owned()),
    };
    let ok = state.throttle.check(username, source, password.clone(), hash).await?;
    match (user, ok) {
        (Some(user), true) => {
            state.throttle.succeeded(username);
            Ok(user)
        }
        _ => {
            state.throttle.failed(username, source);
            Err(ApiError::bad_credentials())
        }
    }
}

/// The client's address: the connection's peer, or, when the peer is one of
/// `auth.trusted_proxies`, the last address of its `X-Forwarded-For`.
pub fn client_address(state: State) -> impl Filter<Extract = (Option<IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>().and(warp::addr::remote()).and(warp::header::headers_cloned()).map(
        move |tls_peer: Option<PeerAddr>, plain_peer: Option<SocketAddr>, headers: HeaderMap| {
            let peer = tls_peer.map(|p| p.0).or(plain_peer)?.ip();
            if !state.config.auth.trusted_proxies.contains(&peer) {
                return Some(peer);
            }
            // The proxy appends the address it saw; whatever the client sent comes before it.
            let forwarded =
                headers.get_all("x-forwarded-for").iter().next_back().and_then(|v| v.to_str().ok());
            Some(
                forwarded
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|a| a.trim().parse().ok())
                    .unwrap_or(peer),
            )
        },
    )
}

/// Opens a session for `user`: a new token (only its hash is stored) and when it expires.
pub async fn create_session(state: &State, user: &User) -> Result<(SecretString, SystemTime), ApiError> {
    let db = super::db(state).await?;
    let token = new_secret(USER_TOKEN_PREFIX);
    let expires_at = SystemTime::now() + Duration::from_secs(state.config.auth.session_ttl_secs);
    users::insert_session(&**db, &secret_hash(token.expose_secret()), user.id, expires_at)
        .await
        .map_err(ApiError::from)?;
    Ok((token, expires_at))
}

/// The user of a session token, if the session is live.
pub async fn session_user(state: &State, token: &str) -> Result<Option<User>, ApiError> {
    if !token.starts_with(USER_TOKEN_PREFIX) {
        return Ok(None);
    }
    let db = super::db(state).await?;
    Ok(users::session_user(&**db, &secret_hash(token)).await?)
}

/// Ends a session.
pub async fn end_session(state: &State, token: &str) -> Result<(), ApiError> {
    let db = super::db(state).await?;
    Ok(users::delete_session(&**db, &secret_hash(token)).await?)
}

/// `POST /login`: a bearer token for a user name and password.
pub async fn login(
    body: Login,
    source: Option<IpAddr>,
    state: State,
) -> Result<warp::reply::Response, warp::Rejection> {
    let user = verify_credentials(&state, &body.username, &body.password, source).await?;
    let (token, expires_at) = create_session(&state, &user).await?;
    let expires_ms = expires_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    Ok(warp::reply::json(&serde_json::json!({
        "token": token.expose_secret(),
        "expires_at_ms": expires_ms,
        "user": user,
    }))
    .into_response())
}

/// `POST /logout`: ends the caller's session.
pub async fn logout(header: Option<String>, state: State) -> Result<warp::reply::Response, warp::Rejection> {
    if let Some(token) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
        end_session(&state, token.trim()).await?;
    }
    Ok(warp::reply::with_status(warp::reply(), warp::http::StatusCode::NO_CONTENT).into_response())
}

use warp::Reply as _;

/// An argon2 hash of a random password, verified against when a user name is unknown so that
/// both cases cost the same.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_secret("")).unwrap_or_default())
}

/// Creates the bootstrap root administrator if no root exists.
pub async fn bootstrap_root(state: &State) -> Result<(), ApiError> {
    let Some(bootstrap) = &state.config.bootstrap else { return Ok(()) };
    let db = super::db(state).await?;
    if users::root_exists(&**db).await.map_err(ApiError::from)? {
        return Ok(());
    }
    let hash = hash_password(&bootstrap.root_password)?;
    match users::insert(&**db, None, &bootstrap.root_username, &hash, Role::Root).await {
        Ok(_) => {
            tracing::info!(username = %bootstrap.root_username, "created the root administrator");
            Ok(())
        }
        // Another replica created it at the same moment.
        Err(e) if e.is_unique_violation() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the caller may see `user`.
pub fn user_visible(principal: &Principal, user: &User) -> bool {
    principal.is_root() || (principal.org().is_some() && principal.org() == user.organization)
}
