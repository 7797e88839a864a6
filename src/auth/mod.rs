//! Authentication (`--auth`): who is calling. Credentials are HTTP Basic (what the
//! mlflow client sends from `MLFLOW_TRACKING_USERNAME`/`PASSWORD`) or a bearer token
//! (`MLFLOW_TRACKING_TOKEN`, gRPC `authorization` metadata). Passwords are kept as
//! Argon2id hashes and tokens as SHA-256 hashes of their secret, both in the event log
//! like every other change. What a caller may do is `access::Access`'s business.

pub mod access;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::Error;
use crate::domain::access::Permission;
use crate::domain::commands::CreateUser;
use crate::store::Store;

pub use access::{Access, Need};

/// The `WWW-Authenticate` challenge of a 401: browsers then ask for a name and password.
pub const CHALLENGE: &str = "Basic realm=\"arbor\", charset=\"UTF-8\"";
/// Passwords checked once are remembered (as a hash of name and password) so that
/// Basic auth costs one Argon2 run per user and password, not one per request; this
/// many at most, then the memory starts over.
const VERIFIED_CACHE_ENTRIES: usize = 10_000;
/// Longest password accepted: Argon2 takes any length, but a megabyte "password" is
/// an attack on the CPU, not a credential.
const MAX_PASSWORD_BYTES: usize = 1024;
/// What every API token starts with, so that a leaked one is recognisable (secret
/// scanners) and a bearer value can be told from other schemes at a glance.
pub const TOKEN_PREFIX: &str = "arbor_";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: anyone may do anything, and nobody is recorded.
    Anyone,
    /// An authenticated user.
    User(Arc<User>),
}

#[derive(Debug)]
pub struct User {
    pub name: String,
    pub admin: bool,
    /// The permission on experiments where the user has no grant of their own.
    pub default_permission: Permission,
    /// What the user signed in with: a long-lived stream checks it is still good as the
    /// users and tokens change.
    pub credential: Credential,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A password, as it was at this sequence number (`UserRecord::password_seq`).
    Password { seq: u64 },
    /// An API token (`expires_at` in epoch milliseconds, 0 never).
    Token { id: String, expires_at: i64 },
    /// Named by the server itself (`arbor admin` offline, tests): only the user's
    /// existence is checked.
    Trusted,
}

impl Caller {
    /// The name recorded on the events this caller makes.
    pub fn actor(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::User(u) => Some(&u.name),
        }
    }

    /// Whether the caller may do everything (auth off counts).
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::User(u) => u.admin,
        }
    }
}

/// How auth is configured.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub enabled: bool,
    /// The permission of a user on an experiment they have no grant for (MLflow's
    /// `default_permission`, READ unless configured).
    pub default_permission: Permission,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enabled: false,
            default_permission: Permission::Read,
        }
    }
}

/// Checks credentials against the users and tokens in the store.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    policy: Policy,
    /// SHA-256 of (name, password) → the user's `password_seq` when it was verified:
    /// valid while the password has not changed since.
    verified: Arc<Mutex<HashMap<[u8; 32], u64>>>,
    /// Argon2 verifications run (also `arbor_password_verifications`), so a test can see
    /// that an unknown user costs one as a known one does.
    verifications: Arc<std::sync::atomic::AtomicU64>,
}

/// A hash no password matches, verified against for names that have no user, so that
/// an unknown name takes as long to refuse as a wrong password: the time of a refusal
/// does not tell which names exist. Made once, on first use.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&uuid::Uuid::new_v4().simple().to_string())
            .unwrap_or_else(|_| String::from("not a hash"))
    })
}

impl Authenticator {
    pub fn new(store: Store, policy: Policy) -> Self {
        if policy.enabled {
            // Pays for the dummy hash now rather than in the first unknown user's
            // refusal, whose time would then stand out.
            dummy_hash();
        }
        Self {
            store,
            policy,
            verified: Arc::default(),
            verifications: Arc::default(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Argon2 verifications this authenticator has run.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The caller an `Authorization` header value names. With auth off, `Anyone`
    /// whatever the header says.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        if !self.policy.enabled {
            return Ok(Caller::Anyone);
        }
        let Some(value) = authorization else {
            return Err(Error::Unauthenticated(
                "Authentication required: send HTTP Basic credentials (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) or a bearer token (MLFLOW_TRACKING_TOKEN).".into(),
            ));
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| Error::Unauthenticated("The Authorization header is not text.".into()))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let (name, credential) = if scheme.eq_ignore_ascii_case("basic") {
            self.basic(rest.trim()).await?
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(rest.trim())?
        } else {
            return Err(Error::Unauthenticated(format!(
                "Unsupported authorization scheme {scheme:?}: use Basic or Bearer."
            )));
        };
        self.caller_with(&name, credential)
    }

    /// The caller for a user known to exist (`arbor admin` offline, tests).
    pub fn caller(&self, name: &str) -> Result<Caller, Error> {
        self.caller_with(name, Credential::Trusted)
    }

    fn caller_with(&self, name: &str, credential: Credential) -> Result<Caller, Error> {
        let user = self.store.user(name)?.ok_or_else(bad_credentials)?;
        Ok(Caller::User(Arc::new(User {
            name: user.username,
            admin: user.is_admin,
            default_permission: self.policy.default_permission,
            credential,
        })))
    }

    async fn basic(&self, encoded: &str) -> Result<(String, Credential), Error> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Error::Unauthenticated("Malformed Basic credentials.".into()))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| Error::Unauthenticated("Malformed Basic credentials.".into()))?;
        let (name, password) = text
            .split_once(':')
            .ok_or_else(|| Error::Unauthenticated("Malformed Basic credentials.".into()))?;
        // A token in the password field (clients that only speak Basic) is as good as
        // the password; a password that merely looks like a token is checked as one.
        if password.starts_with(TOKEN_PREFIX)
            && let Ok((owner, credential)) = self.bearer(password)
            && owner == name
        {
            return Ok((owner, credential));
        }
        let seq = self.check_password(name, password).await?;
        Ok((name.to_string(), Credential::Password { seq }))
    }

    /// `Ok` if `password` is `name`'s password, with the sequence number of the event
    /// that set it.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<u64, Error> {
        let Some(user) = self.store.user(name)? else {
            self.verify(password, dummy_hash().to_string()).await;
            return Err(bad_credentials());
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let known = self
            .verified
            .lock()
            .map(|m| m.get(&key).copied())
            .unwrap_or_default();
        if known == Some(user.password_seq) {
            return Ok(user.password_seq);
        }
        if !self.verify(password, user.password_hash.clone()).await {
            return Err(bad_credentials());
        }
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(key, user.password_seq);
        }
        Ok(user.password_seq)
    }

    /// Whether `password` matches `hash`; Argon2 is meant to be slow (tens of
    /// milliseconds), so it runs off the async workers.
    async fn verify(&self, password: &str, hash: String) -> bool {
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::global().password_verifications.inc();
        let password = password.to_string();
        tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false)
    }

    /// The owner of a valid, unexpired token.
    fn bearer(&self, token: &str) -> Result<(String, Credential), Error> {
        let parsed = Token::parse(token).ok_or_else(bad_credentials)?;
        let rec = self.store.token(&parsed.id)?.ok_or_else(bad_credentials)?;
        if !constant_time_eq(rec.secret_hash.as_bytes(), parsed.secret_hash().as_bytes()) {
            return Err(bad_credentials());
        }
        if rec.expires_at != 0 && rec.expires_at <= chrono::Utc::now().timestamp_millis() {
            return Err(Error::Unauthenticated(format!(
                "Token {} has expired.",
                rec.token_id
            )));
        }
        Ok((
            rec.username,
            Credential::Token {
                id: rec.token_id,
                expires_at: rec.expires_at,
            },
        ))
    }
}

/// `Ok` while what `user` signed in with still holds: the user exists (an admin still
/// an admin, since an admin's stream shows everything), and their token is neither
/// revoked nor expired, or their password unchanged. Streams ask it as users and tokens
/// change, so that a revocation ends the streams it opened.
pub fn still_valid(store: &Store, user: &User) -> Result<(), Error> {
    let ended = |why: String| Err(Error::Unauthenticated(format!("{why}: this stream ends")));
    let Some(record) = store.user(&user.name)? else {
        return ended(format!("user {} was deleted", user.name));
    };
    if user.admin && !record.is_admin {
        return ended(format!("{} is no longer an admin", user.name));
    }
    match &user.credential {
        Credential::Trusted => Ok(()),
        Credential::Password { seq } if *seq != record.password_seq => {
            ended(format!("the password of {} was changed", user.name))
        }
        Credential::Password { .. } => Ok(()),
        Credential::Token { id, expires_at } => {
            if store.token(id)?.is_none_or(|t| t.username != user.name) {
                return ended(format!("token {id} was revoked"));
            }
            if *expires_at != 0 && *expires_at <= chrono::Utc::now().timestamp_millis() {
                return ended(format!("token {id} has expired"));
            }
            Ok(())
        }
    }
}

fn bad_credentials() -> Error {
    Error::Unauthenticated("Invalid username, password or token.".into())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Argon2id hash (PHC string) of a password, with a random salt. Slow on purpose:
/// call it off the async workers (`spawn_blocking`) in servers.
pub fn hash_password(password: &str) -> Result<String, Error> {
    check_password_text(password)?;
    use argon2::password_hash::{PasswordHasher, SaltString};
    // 16 bytes from the OS's generator (a v4 UUID: 122 random bits), as Argon2 asks.
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| Error::invalid(format!("cannot make a salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::invalid(format!("cannot hash the password: {e}")))
}

/// `hash_password` on a blocking thread.
pub async fn hash_password_async(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| Error::Unavailable(format!("password hashing failed: {e}")))?
}

/// A password a user may have: not empty, not huge.
pub fn check_password_text(password: &str) -> Result<(), Error> {
    if password.is_empty() {
        return Err(Error::invalid("Password cannot be empty."));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!(
            "Password is longer than {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    Ok(())
}

fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// An API token: `arbor_<id>_<secret>`. The id is public (it names the token in lists
/// and revocations); only a SHA-256 of the secret is stored, so the token is shown once.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: String,
    secret: String,
}

impl Token {
    /// A new token with a random id (48 bits) and secret (244 bits, two v4 UUIDs).
    pub fn generate() -> Token {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        Token { id, secret }
    }

    pub fn parse(text: &str) -> Option<Token> {
        let rest = text.strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        (!id.is_empty() && !secret.is_empty()).then(|| Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The whole token, as the user sends it.
    pub fn text(&self) -> String {
        format!("{TOKEN_PREFIX}{}_{}", self.id, self.secret)
    }

    /// What the store keeps: SHA-256 of the secret, hex.
    pub fn secret_hash(&self) -> String {
        Sha256::digest(self.secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Makes sure a store served with `--auth` has an admin: on a store without users,
/// creates `name` with `password` (refusing to start without one); on a store with
/// users, leaves them be.
pub async fn bootstrap(store: &Store, name: &str, password: Option<String>) -> Result<(), Error> {
    if !store.users()?.is_empty() {
        if password.is_some() {
            tracing::info!(
                "users exist: the admin password given is used only on a store without users"
            );
        }
        return Ok(());
    }
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(Error::invalid(
            "--auth on a store without users needs the first admin's password: set ARBOR_ADMIN_PASSWORD or --admin-password-file (or create users offline with `arbor admin create-user --admin`)",
        ));
    };
    crate::domain::access::username(name)?;
    let hash = hash_password_async(password).await?;
    match store
        .submit(CreateUser {
            username: name.to_string(),
            password_hash: hash,
            is_admin: true,
        })
        .await
    {
        Ok(_) => tracing::info!(admin = name, "created the first admin"),
        // Another replica of a shared store, starting at the same time, made it first.
        Err(Error::AlreadyExists(_)) if store.is_shared() => {
            tracing::info!(admin = name, "another replica created the first admin");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token's text parses back to its id and secret; the stored hash is of the
    /// secret only; anything else does not parse.
    #[test]
    fn tokens_round_trip_and_hash_their_secret() {
        let t = Token::generate();
        let parsed = Token::parse(&t.text()).expect("parses");
        assert_eq!(parsed.id, t.id);
        assert_eq!(parsed.secret_hash(), t.secret_hash());
        assert_eq!(t.secret_hash().len(), 64);
        assert!(!t.secret_hash().contains(&t.secret));
        assert_ne!(Token::generate().text(), t.text());
        for bad in [
            "",
            "arbor_",
            "arbor__x",
            "arbor_id_",
            "token_a_b",
            "arbor_only",
        ] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
    }

    /// A password verifies against its hash and no other; hashes are salted.
    #[test]
    fn passwords_hash_with_argon2id_and_salt() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert_ne!(hash_password("correct horse").expect("hash"), h);
        assert!(hash_password("").is_err());
        assert!(hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(!verify_password("x", "not a hash"));
    }

    /// MLflow's levels, in order, each able to do what the ones below can.
    #[test]
    fn permissions_are_ordered_as_in_mlflow() {
        use crate::domain::access::Permission::*;
        let can = |p: Permission| (p.can_read(), p.can_update(), p.can_delete(), p.can_manage());
        assert_eq!(can(NoPermissions), (false, false, false, false));
        assert_eq!(can(Read), (true, false, false, false));
        assert_eq!(can(Use), (true, false, false, false));
        assert_eq!(can(Edit), (true, true, false, false));
        assert_eq!(can(Manage), (true, true, true, true));
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()).expect("parses"), p);
        }
        assert!(Permission::parse("read").is_err());
    }
}
