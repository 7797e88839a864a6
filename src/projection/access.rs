//! The projected users, tokens and experiment permissions (`--auth`), as stored under
//! `U`, `T` and `G`. Like every projection, a pure function of the log: `arbor rebuild`
//! and backups bring them back with everything else.

use prost::Message;

use crate::db::keys;
use crate::db::kv::{Kv, Pending};
use crate::domain::Error;
use crate::domain::access::Permission;
use crate::pb::event::Payload;

#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    #[prost(string, tag = "1")]
    pub username: String,
    /// An Argon2id PHC string.
    #[prost(string, tag = "2")]
    pub password_hash: String,
    #[prost(bool, tag = "3")]
    pub is_admin: bool,
    /// The sequence number of the event that last set the password: a cached check of
    /// a password is good only while this is unchanged.
    #[prost(uint64, tag = "4")]
    pub password_seq: u64,
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    /// A number for MLflow's `User.id`: the sequence number of the creating event.
    #[prost(uint64, tag = "6")]
    pub id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenRecord {
    #[prost(string, tag = "1")]
    pub token_id: String,
    #[prost(string, tag = "2")]
    pub username: String,
    /// SHA-256 of the secret, hex.
    #[prost(string, tag = "3")]
    pub secret_hash: String,
    /// Epoch milliseconds; 0: never.
    #[prost(int64, tag = "4")]
    pub expires_at: i64,
    #[prost(string, tag = "5")]
    pub description: String,
    #[prost(int64, tag = "6")]
    pub created_at: i64,
}

pub(crate) fn load_user(kv: &impl Kv, name: &str) -> Result<Option<UserRecord>, Error> {
    kv.get(&keys::user(name))?
        .map(|b| UserRecord::decode(b.as_slice()).map_err(Error::from))
        .transpose()
}

pub(crate) fn load_token(kv: &impl Kv, token_id: &str) -> Result<Option<TokenRecord>, Error> {
    kv.get(&keys::token(token_id))?
        .map(|b| TokenRecord::decode(b.as_slice()).map_err(Error::from))
        .transpose()
}

/// Every user, by name.
pub(crate) fn users(kv: &impl Kv) -> Result<Vec<UserRecord>, Error> {
    kv.keys_with_prefix(&[keys::USER])?
        .into_iter()
        .filter_map(|k| kv.get(&k).transpose())
        .map(|b| UserRecord::decode(b?.as_slice()).map_err(Error::from))
        .collect()
}

/// Every token (revoked ones are gone), by id.
pub(crate) fn tokens(kv: &impl Kv) -> Result<Vec<TokenRecord>, Error> {
    kv.keys_with_prefix(&[keys::TOKEN])?
        .into_iter()
        .filter_map(|k| kv.get(&k).transpose())
        .map(|b| TokenRecord::decode(b?.as_slice()).map_err(Error::from))
        .collect()
}

/// The permission granted to `name` on the experiment, if one was.
pub(crate) fn grant(
    kv: &impl Kv,
    experiment_id: u64,
    name: &str,
) -> Result<Option<Permission>, Error> {
    kv.get(&keys::grant(experiment_id, name))?
        .map(|b| {
            Permission::parse(&String::from_utf8_lossy(&b))
                .map_err(|_| Error::Corrupt(format!("a stored permission of {name} is unknown")))
        })
        .transpose()
}

/// Every grant: (experiment id, user name, permission).
pub(crate) fn grants(kv: &impl Kv) -> Result<Vec<(u64, String, Permission)>, Error> {
    let mut out = Vec::new();
    for k in kv.keys_with_prefix(&[keys::GRANT])? {
        let (Some(id), Some(name)) = (k.get(1..9), k.get(9..)) else {
            continue;
        };
        let id = u64::from_be_bytes(id.try_into().unwrap_or_default());
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some(p) = grant(kv, id, &name)? {
            out.push((id, name, p));
        }
    }
    Ok(out)
}

fn experiment_number(id: &str) -> Result<u64, Error> {
    id.parse()
        .map_err(|_| Error::Corrupt(format!("event names experiment {id:?}")))
}

/// Projects one users/tokens/permissions event; `false` if `payload` is none of those.
pub(crate) fn apply(payload: &Payload, seq: u64, now: i64, w: &mut Pending) -> Result<bool, Error> {
    match payload {
        Payload::UserCreated(e) => {
            let rec = UserRecord {
                username: e.username.clone(),
                password_hash: e.password_hash.clone(),
                is_admin: e.is_admin,
                password_seq: seq,
                created_at: now,
                id: seq,
            };
            w.put(keys::user(&e.username), rec.encode_to_vec());
        }
        Payload::UserPasswordChanged(e) => {
            let mut rec = user(w, &e.username)?;
            rec.password_hash = e.password_hash.clone();
            rec.password_seq = seq;
            w.put(keys::user(&e.username), rec.encode_to_vec());
        }
        Payload::UserAdminSet(e) => {
            let mut rec = user(w, &e.username)?;
            rec.is_admin = e.is_admin;
            w.put(keys::user(&e.username), rec.encode_to_vec());
        }
        Payload::UserDeleted(e) => {
            w.remove(keys::user(&e.username));
            for t in tokens(w)? {
                if t.username == e.username {
                    w.remove(keys::token(&t.token_id));
                }
            }
            for (id, name, _) in grants(w)? {
                if name == e.username {
                    w.remove(keys::grant(id, &name));
                }
            }
        }
        Payload::TokenIssued(e) => {
            let rec = TokenRecord {
                token_id: e.token_id.clone(),
                username: e.username.clone(),
                secret_hash: e.secret_hash.clone(),
                expires_at: e.expires_at,
                description: e.description.clone(),
                created_at: now,
            };
            w.put(keys::token(&e.token_id), rec.encode_to_vec());
        }
        Payload::TokenRevoked(e) => w.remove(keys::token(&e.token_id)),
        Payload::ExperimentPermissionSet(e) => w.put(
            keys::grant(experiment_number(&e.experiment_id)?, &e.username),
            e.permission.as_bytes().to_vec(),
        ),
        Payload::ExperimentPermissionDeleted(e) => w.remove(keys::grant(
            experiment_number(&e.experiment_id)?,
            &e.username,
        )),
        _ => return Ok(false),
    }
    Ok(true)
}

fn user(kv: &impl Kv, name: &str) -> Result<UserRecord, Error> {
    load_user(kv, name)?.ok_or_else(|| Error::Corrupt(format!("event names unknown user {name}")))
}
