//! `arbor admin`: users and tokens, offline on a stopped store (`--data-dir`) or online
//! through a running server's API (`--server`, as an admin: `ARBOR_TOKEN`, or
//! `ARBOR_USERNAME` and `ARBOR_PASSWORD`). Offline changes are events like any other,
//! recorded with no actor.

use std::path::PathBuf;

use arbor::domain::commands::{ChangePassword, CreateUser, IssueToken, RevokeToken, SetAdmin};
use arbor::server::BoxError;
use arbor::store::{Store, StoreConfig};

/// What to do.
#[derive(Debug, Clone)]
pub enum AdminAction {
    CreateUser {
        username: String,
        password: String,
        admin: bool,
    },
    ResetPassword {
        username: String,
        password: String,
    },
    SetAdmin {
        username: String,
        admin: bool,
    },
    IssueToken {
        username: String,
        description: String,
        expires_in_days: Option<i64>,
    },
    RevokeToken {
        token_id: String,
    },
    ListUsers,
    ListTokens,
}

/// Where to do it.
#[derive(Debug, Clone)]
pub enum Target {
    DataDir(PathBuf, StoreConfig),
    Server(String),
}

/// Runs `action` and returns what to print.
pub async fn run(target: Target, action: AdminAction) -> Result<String, BoxError> {
    match target {
        Target::DataDir(dir, config) => {
            if !arbor::store::exists(&dir) {
                return Err(format!("{} holds no Arbor store", dir.display()).into());
            }
            let store = Store::open(&dir, &config)?;
            let result = offline(&store, action).await;
            store.close().await;
            result
        }
        Target::Server(url) => online(&url, action).await,
    }
}

async fn offline(store: &Store, action: AdminAction) -> Result<String, BoxError> {
    Ok(match action {
        AdminAction::CreateUser {
            username,
            password,
            admin,
        } => {
            let hash = arbor::auth::hash_password_async(password).await?;
            store
                .submit(CreateUser {
                    username: username.clone(),
                    password_hash: hash,
                    is_admin: admin,
                })
                .await?;
            format!(
                "created user {username}{}",
                if admin { " (admin)" } else { "" }
            )
        }
        AdminAction::ResetPassword { username, password } => {
            let hash = arbor::auth::hash_password_async(password).await?;
            store
                .submit(ChangePassword {
                    username: username.clone(),
                    password_hash: hash,
                })
                .await?;
            format!("set the password of {username}")
        }
        AdminAction::SetAdmin { username, admin } => {
            store
                .submit(SetAdmin {
                    username: username.clone(),
                    is_admin: admin,
                })
                .await?;
            format!("{username} is {}an admin", if admin { "" } else { "not " })
        }
        AdminAction::IssueToken {
            username,
            description,
            expires_in_days,
        } => {
            let token = arbor::auth::Token::generate();
            let expires_at = match expires_in_days {
                Some(d) if d > 0 => chrono::Utc::now()
                    .timestamp_millis()
                    .saturating_add(d.saturating_mul(86_400_000)),
                _ => 0,
            };
            store
                .submit(IssueToken {
                    token_id: token.id.clone(),
                    username,
                    secret_hash: token.secret_hash(),
                    expires_at,
                    description,
                })
                .await?;
            token.text()
        }
        AdminAction::RevokeToken { token_id } => {
            store
                .submit(RevokeToken {
                    token_id: token_id.clone(),
                })
                .await?;
            format!("revoked token {token_id}")
        }
        AdminAction::ListUsers => store
            .users()?
            .iter()
            .map(|u| {
                format!(
                    "{}\t{}",
                    u.username,
                    if u.is_admin { "admin" } else { "user" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        AdminAction::ListTokens => store
            .tokens()?
            .iter()
            .map(|t| format!("{}\t{}\t{}", t.token_id, t.username, t.description))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

async fn online(url: &str, action: AdminAction) -> Result<String, BoxError> {
    use serde_json::json;
    let call = |method: &'static str, path: &'static str, body: serde_json::Value| {
        super::http::call(url, method, path, Some(body))
    };
    Ok(match action {
        AdminAction::CreateUser {
            username,
            password,
            admin,
        } => {
            call(
                "POST",
                "/api/2.0/mlflow/users/create",
                json!({"username": username, "password": password}),
            )
            .await?;
            if admin {
                call(
                    "PATCH",
                    "/api/2.0/mlflow/users/update-admin",
                    json!({"username": username, "is_admin": true}),
                )
                .await?;
            }
            format!(
                "created user {username}{}",
                if admin { " (admin)" } else { "" }
            )
        }
        AdminAction::ResetPassword { username, password } => {
            call(
                "PATCH",
                "/api/2.0/mlflow/users/update-password",
                json!({"username": username, "password": password}),
            )
            .await?;
            format!("set the password of {username}")
        }
        AdminAction::SetAdmin { username, admin } => {
            call(
                "PATCH",
                "/api/2.0/mlflow/users/update-admin",
                json!({"username": username, "is_admin": admin}),
            )
            .await?;
            format!("{username} is {}an admin", if admin { "" } else { "not " })
        }
        AdminAction::IssueToken {
            username,
            description,
            expires_in_days,
        } => {
            let answer = call(
                "POST",
                "/api/arbor/v1/tokens/create",
                json!({"username": username, "description": description, "expires_in_days": expires_in_days.unwrap_or(0)}),
            )
            .await?;
            answer["token"].as_str().unwrap_or_default().to_string()
        }
        AdminAction::RevokeToken { token_id } => {
            call(
                "POST",
                "/api/arbor/v1/tokens/revoke",
                json!({"token_id": token_id}),
            )
            .await?;
            format!("revoked token {token_id}")
        }
        AdminAction::ListUsers => {
            let answer = super::http::call(url, "GET", "/api/2.0/mlflow/users/list", None).await?;
            answer["users"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| {
                    format!(
                        "{}\t{}",
                        u["username"].as_str().unwrap_or_default(),
                        if u["is_admin"].as_bool() == Some(true) {
                            "admin"
                        } else {
                            "user"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        AdminAction::ListTokens => {
            let answer = super::http::call(url, "GET", "/api/arbor/v1/tokens/list", None).await?;
            answer["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{}\t{}\t{}",
                        t["token_id"].as_str().unwrap_or_default(),
                        t["username"].as_str().unwrap_or_default(),
                        t["description"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    })
}

/// A new password: ARBOR_NEW_PASSWORD, else the file, else the first line of stdin.
fn new_password(file: Option<&std::path::Path>) -> Result<String, arbor::server::BoxError> {
    if let Ok(p) = std::env::var("ARBOR_NEW_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    let password = text.trim_end_matches(['\r', '\n']).to_string();
    arbor::auth::check_password_text(&password)?;
    Ok(password)
}

/// `arbor admin`: the flags turned into an action, run on a server or a stopped store.
pub fn main(args: crate::config::AdminArgs) -> Result<(), arbor::server::BoxError> {
    use crate::admin::{AdminAction, Target};
    use crate::config::AdminCommand;
    let target = match (args.server, args.data_dir) {
        (Some(url), _) => Target::Server(url),
        (None, Some(dir)) => Target::DataDir(dir, arbor::store::StoreConfig::default()),
        (None, None) => return Err("give --server URL or --data-dir DIR".into()),
    };
    let action = match args.command {
        AdminCommand::CreateUser {
            username,
            admin,
            password_file,
        } => AdminAction::CreateUser {
            username,
            password: new_password(password_file.as_deref())?,
            admin,
        },
        AdminCommand::ResetPassword {
            username,
            password_file,
        } => AdminAction::ResetPassword {
            username,
            password: new_password(password_file.as_deref())?,
        },
        AdminCommand::SetAdmin { username, revoke } => AdminAction::SetAdmin {
            username,
            admin: !revoke,
        },
        AdminCommand::IssueToken {
            username,
            description,
            expires_in_days,
        } => AdminAction::IssueToken {
            username,
            description,
            expires_in_days,
        },
        AdminCommand::RevokeToken { token_id } => AdminAction::RevokeToken { token_id },
        AdminCommand::ListUsers => AdminAction::ListUsers,
        AdminCommand::ListTokens => AdminAction::ListTokens,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let out = runtime.block_on(crate::admin::run(target, action))?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}
