//! Logins and secrets: users log in for a bearer token (argon2id-checked passwords, bounded by
//! the throttle), nodes present their API key; tokens and keys are 256-bit random secrets of
//! which only a hash is stored.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

use super::{AppError, Principal, State, db};
use crate::db::directory;
use crate::db::users::{self, Role, User};

const USER_TOKEN_PREFIX: &str = "fedq_u_";
const NODE_KEY_PREFIX: &str = "fedq_n_";

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
pub fn hash_password(password: &SecretString) -> Result<String, AppError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source is unavailable");
    Argon2::default()
        .hash_password_with_salt(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AppError::internal())
}

/// Whether `password` matches the PHC string `hash` (run on the throttle's hashing threads).
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// Checks a user name and password; the same error, after the same work, whether the user
/// exists or not. `source` is the client's address, for the throttle (`throttle.rs`): over a
/// failure limit the login is refused before any work, and at most a few checks run at once.
pub async fn verify_credentials(
    state: &State,
    username: &str,
    password: &SecretString,
    source: Option<IpAddr>,
) -> Result<User, AppError> {
    state.throttle.admit(username, source)?;
    let db = db(state).await?;
    let found = users::by_username(&**db, username).await.map_err(AppError::from)?;
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
            state.throttle.succeeded(username, source);
            Ok(user)
        }
        _ => {
            state.throttle.failed(username, source);
            Err(AppError::bad_credentials())
        }
    }
}

/// Opens a session for `user`: a new token (only its hash is stored) and when it expires.
pub async fn create_session(state: &State, user: &User) -> Result<(SecretString, SystemTime), AppError> {
    let db = db(state).await?;
    let token = new_secret(USER_TOKEN_PREFIX);
    let expires_at = SystemTime::now() + Duration::from_secs(state.config.auth.session_ttl_secs);
    users::insert_session(&**db, &secret_hash(token.expose_secret()), user.id, expires_at)
        .await
        .map_err(AppError::from)?;
    Ok((token, expires_at))
}

/// The user of a session token, if the session is live.
pub async fn session_user(state: &State, token: &str) -> Result<Option<User>, AppError> {
    if !token.starts_with(USER_TOKEN_PREFIX) {
        return Ok(None);
    }
    let db = db(state).await?;
    Ok(users::session_user(&**db, &secret_hash(token)).await?)
}

/// Ends a session.
pub async fn end_session(state: &State, token: &str) -> Result<(), AppError> {
    let db = db(state).await?;
    Ok(users::delete_session(&**db, &secret_hash(token)).await?)
}

/// An argon2 hash of a random password, verified against when a user name is unknown so that
/// both cases cost the same.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_secret("")).unwrap_or_default())
}

/// Why a bootstrap password may not create the root administrator, if it may not: one that an
/// example file ships (`change-me…`), or one too short to resist guessing.
pub fn weak_bootstrap_password(password: &str) -> Option<&'static str> {
    if password.to_ascii_lowercase().contains("change-me")
        || password.to_ascii_lowercase().contains("changeme")
    {
        return Some("is the example's placeholder");
    }
    (password.chars().count() < 12).then_some("is shorter than 12 characters")
}

/// Creates the bootstrap root administrator if no root exists.
pub async fn bootstrap_root(state: &State) -> Result<(), AppError> {
    let Some(bootstrap) = &state.config.bootstrap else { return Ok(()) };
    let db = db(state).await?;
    if users::root_exists(&**db).await.map_err(AppError::from)? {
        return Ok(());
    }
    let Some(password) = &bootstrap.root_password else {
        return Err(AppError::invalid(format!(
            "no root administrator exists and bootstrap.root_password is not set: set \
             FEDQ_BOOTSTRAP__ROOT_PASSWORD to create {:?}",
            bootstrap.root_username
        )));
    };
    let hash = hash_password(password)?;
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

/// The caller a bearer token stands for: a node by its API key, a user by a live session;
/// `unauthenticated` otherwise.
pub async fn authenticate(state: &State, token: &str) -> Result<Principal, AppError> {
    let hash = secret_hash(token);
    let principal = if token.starts_with(NODE_KEY_PREFIX) {
        let db = db(state).await?;
        directory::node_by_key(&**db, &hash).await?.map(Principal::Node)
    } else if token.starts_with(USER_TOKEN_PREFIX) {
        let db = db(state).await?;
        users::session_user(&**db, &hash).await?.map(Principal::User)
    } else {
        None
    };
    principal.ok_or_else(AppError::unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::weak_bootstrap_password;

    #[test]
    fn an_example_or_short_bootstrap_password_is_refused() {
        assert!(weak_bootstrap_password("change-me-now").is_some());
        assert!(weak_bootstrap_password("Please-CHANGE-ME-soon").is_some());
        assert!(weak_bootstrap_password("short").is_some());
        assert!(weak_bootstrap_password("root-password-for-tests").is_none());
    }
}
