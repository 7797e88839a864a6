//! The command line, and the same settings from `ARBOR_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use arbor::store::StoreConfig;

#[derive(Debug, Parser)]
#[command(
    name = "arbor",
    version,
    about = "An experiment-tracking server for machine-learning runs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
    /// How log lines on stderr are written.
    #[arg(long, global = true, env = "ARBOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Serve gRPC and HTTP on one address.
    Serve(Box<ServeArgs>),
    /// Re-derive every projection from the event log (the server must be stopped).
    Rebuild(StoreArgs),
    /// Verify a stopped store without changing it: the log gap-free and decodable, the
    /// projections equal to what the log implies. Exits 1 when something is wrong.
    Check(StoreArgs),
    /// Say where a stopped store's disk space goes: each table's keys and values, the
    /// points' two copies (log and history), and sled's own overhead.
    DiskUsage(StoreArgs),
    /// Write a consistent backup of the event log (and, with --with-artifacts, the
    /// artifact files) from a running server or a stopped store.
    Backup(BackupArgs),
    /// Build a new store from a full backup and the incremental ones after it.
    Restore(RestoreArgs),
    /// Move a store's log between a data directory and PostgreSQL (`--store`), either
    /// way, with its artifact files if asked. The source is read, never changed.
    MigrateStore(MigrateArgs),
    /// Print a run's subtree with statuses (and a metric, with --metric).
    Tree(TreeArgs),
    /// Follow a run's metrics live (a table on a terminal, one line per point when piped).
    Watch(WatchArgs),
    /// Users and API tokens (`--auth`): on a stopped store (--data-dir) or through a
    /// running server as an admin (--server, with ARBOR_TOKEN or ARBOR_USERNAME and
    /// ARBOR_PASSWORD).
    Admin(AdminArgs),
    /// Copy experiments, runs (with their ids), histories, inputs, logged models and
    /// artifacts from an MLflow-compatible server into Arbor. Run again to resume or
    /// to copy what changed; nothing is copied twice.
    Import(ImportArgs),
    /// Replay experiments and runs from Arbor (or any MLflow-compatible server) into an
    /// MLflow server; it makes new run ids, printed as `old new` lines.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The source server's URL (credentials: MLFLOW_TRACKING_TOKEN, or
    /// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
    #[arg(long)]
    pub from: String,
    /// Only these experiments (names or ids, comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    pub experiments: Vec<String>,
    /// A running Arbor (credentials: ARBOR_TOKEN, or ARBOR_USERNAME and ARBOR_PASSWORD).
    #[arg(
        long,
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    pub server: Option<String>,
    /// A stopped Arbor store (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Runs copied at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Requests to the source in flight at once (`mlflow server` with one worker
    /// serves one at a time; raise it for a source with more workers).
    #[arg(long, default_value_t = 1)]
    pub source_connections: usize,
    /// Only compare source and Arbor (params, tags, histories, artifact checksums);
    /// exits 1 when they differ.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The MLflow server to write into (credentials: MLFLOW_TRACKING_TOKEN, or
    /// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
    #[arg(long)]
    pub to: String,
    /// The Arbor to read (credentials: ARBOR_TOKEN, or ARBOR_USERNAME and ARBOR_PASSWORD).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub server: String,
    /// Only these experiments (names or ids, comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    pub experiments: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A running server's URL.
    #[arg(long, global = true, conflicts_with = "data_dir")]
    pub server: Option<String>,
    /// A stopped store's data directory.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user. The password comes from ARBOR_NEW_PASSWORD, --password-file, or
    /// the first line of stdin.
    CreateUser {
        username: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Set a user's password (from ARBOR_NEW_PASSWORD, --password-file, or stdin).
    ResetPassword {
        username: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Make a user an admin, or (with --revoke) not.
    SetAdmin {
        username: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Issue an API token for a user; it is printed once and never again.
    IssueToken {
        username: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// Revoke a token by its id (the part after `arbor_`, up to the next `_`).
    RevokeToken { token_id: String },
    /// List users.
    ListUsers,
    /// List tokens (ids, owners, descriptions; never the secrets).
    ListTokens,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A running server's URL (backs up while it keeps serving).
    #[arg(
        long,
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    pub server: Option<String>,
    /// A stopped store's data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where artifacts live when backing up a data directory (default: DATA_DIR/artifacts).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// The backup file to write (it appears only once complete and verified).
    #[arg(long)]
    pub out: PathBuf,
    /// Include every artifact file.
    #[arg(long)]
    pub with_artifacts: bool,
    /// Only what came after this earlier backup (an incremental backup).
    #[arg(long)]
    pub incremental_from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// A stopped store's data directory, or a PostgreSQL URL (postgres://...).
    #[arg(long)]
    pub from: String,
    /// A PostgreSQL URL whose log is empty (or an interrupted copy of this one, which
    /// resumes), or a new data directory.
    #[arg(long)]
    pub to: String,
    /// The shared artifact directory of the PostgreSQL side (the replicas'
    /// --artifacts-dir): artifact files are copied into it from the data directory's
    /// artifacts, or out of it into them. Without it, artifacts stay where they are.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup files: a full one, then each incremental one in order (repeat the flag).
    #[arg(long = "from", required = true)]
    pub from: Vec<PathBuf>,
    /// The new store's data directory (must not hold a store).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where to put the artifact files (default: DATA_DIR/artifacts).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The run to watch.
    #[arg(long = "run")]
    pub run_id: String,
    /// Also every run below it, including runs created while watching.
    #[arg(long)]
    pub subtree: bool,
    /// Only these metric keys, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// The server's gRPC URL.
    #[arg(long, env = "ARBOR_SERVER", default_value = "http://127.0.0.1:5000")]
    pub server: String,
    /// Start at this event sequence number (0: the beginning); default: from now on.
    #[arg(long)]
    pub from_seq: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where the database (and, later, artifacts) live.
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "./arbor-data")]
    pub data_dir: PathBuf,
    /// sled's page cache in MiB. Raise it for stores of 100,000 runs and more: paging
    /// through 100,000 runs took 1.6–2.0 s with 8 or 16 MiB and 1.0 s with 64 MiB.
    #[arg(long, env = "ARBOR_CACHE_MB", default_value_t = arbor::store::DEFAULT_CACHE_MB)]
    pub cache_mb: u64,
    /// Where artifact files live (default: DATA_DIR/artifacts).
    #[arg(long, env = "ARBOR_ARTIFACTS_DIR")]
    pub artifacts_dir: Option<PathBuf>,
    /// MiB kept free on the data directory's disk: below it writes are refused (503,
    /// UNAVAILABLE, health NOT_SERVING) and resume by themselves once space is freed.
    #[arg(long, env = "ARBOR_MIN_FREE_SPACE_MB", default_value_t = 64)]
    pub min_free_space_mb: u64,
}

impl ServeArgs {
    /// Where `--mlflow-ui` says the UI comes from, if anywhere.
    pub fn mlflow_ui_source(&self) -> Option<arbor::api::mlflow::ui::UiSource> {
        use arbor::api::mlflow::ui::UiSource;
        self.mlflow_ui.as_deref().map(|v| match v {
            "auto" => UiSource::Auto {
                python: self.mlflow_ui_python.clone(),
            },
            path => UiSource::Path(PathBuf::from(path)),
        })
    }
}

impl ServeArgs {
    /// The connection limits the flags ask for.
    pub fn limits(&self) -> arbor::server::Limits {
        arbor::server::Limits {
            max_connections: self
                .max_connections
                .unwrap_or_else(arbor::server::Limits::default_max_connections)
                .max(1),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_json_body_bytes: self.max_json_body_mb.max(1).saturating_mul(1 << 20),
            max_grpc_message_bytes: self.max_grpc_message_mb.max(1).saturating_mul(1 << 20),
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            body_timeout: std::time::Duration::from_secs(self.body_timeout_secs.max(1)),
        }
    }
}

impl StoreArgs {
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            cache_bytes: self.cache_mb.saturating_mul(1024 * 1024),
            artifacts_dir: self.artifacts_dir.clone(),
            min_free_bytes: self.min_free_space_mb.saturating_mul(1024 * 1024),
            shared_log: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "ARBOR_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Serve MLflow's web UI: `auto` (from the `mlflow` package that --mlflow-ui-python
    /// imports) or the path of the UI's `build` folder.
    #[arg(long, env = "ARBOR_MLFLOW_UI", value_name = "auto|PATH")]
    pub mlflow_ui: Option<String>,
    /// The Python interpreter whose `mlflow` package `--mlflow-ui auto` uses (a venv's
    /// `bin/python`, say).
    #[arg(long, env = "ARBOR_MLFLOW_UI_PYTHON", default_value = "python3")]
    pub mlflow_ui_python: String,
    /// Most connections open at once; more wait in the listen backlog. Default: the
    /// file-descriptor limit (raised to its hard limit) less 64.
    #[arg(long, env = "ARBOR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a connection may sit with no request in flight (an idle keep-alive
    /// connection, or headers arriving too slowly) before it is closed.
    #[arg(long, env = "ARBOR_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Seconds a request body may stall (no byte arriving), and the grace before it must
    /// keep up 16 KiB/s on average; a body that does not is answered 408
    /// (DEADLINE_EXCEEDED) and its connection closed. Client streams (LogMetricStream)
    /// may pause as long as they like.
    #[arg(long, env = "ARBOR_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Largest MLflow JSON request body in MiB (artifact uploads stream and are not
    /// bound by it).
    #[arg(long, env = "ARBOR_MAX_JSON_BODY_MB", default_value_t = 16)]
    pub max_json_body_mb: usize,
    /// A bearer token that `/metrics` requires (Prometheus' `authorization` setting);
    /// absent, `/metrics` is open like every other route.
    #[arg(long, env = "ARBOR_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Largest gRPC request message in MiB.
    #[arg(long, env = "ARBOR_MAX_GRPC_MESSAGE_MB", default_value_t = 16)]
    pub max_grpc_message_mb: usize,
    /// Host names requests may carry (`Host`, `:authority`), comma-separated;
    /// `*.example.com` allows subdomains, `*` any. Default: loopback names when
    /// listening on loopback, any otherwise.
    #[arg(long, env = "ARBOR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origins whose web pages may call this server (CORS), comma-separated, e.g.
    /// `https://dash.example.com`; `*` for any. Default: none (CORS off).
    #[arg(long, env = "ARBOR_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Serve HTTPS and gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    /// SIGHUP reads the certificate and key again.
    #[arg(long, env = "ARBOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "ARBOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates that chain to these CA certificates (PEM): mTLS.
    #[arg(long, env = "ARBOR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require credentials on every surface (HTTP Basic or a bearer token) and enforce
    /// per-experiment permissions. The first start needs an admin password
    /// (ARBOR_ADMIN_PASSWORD or --admin-password-file).
    #[arg(long, env = "ARBOR_AUTH", value_parser = clap::builder::FalseyValueParser::new(), default_value_t = false)]
    pub auth: bool,
    /// The permission users have on experiments they hold no grant for: READ, USE,
    /// EDIT, MANAGE or NO_PERMISSIONS.
    #[arg(long, env = "ARBOR_AUTH_DEFAULT_PERMISSION", default_value = "READ", value_parser = parse_permission)]
    pub auth_default_permission: arbor::domain::access::Permission,
    /// The admin created on a store without users when auth is on.
    #[arg(long, env = "ARBOR_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    /// The first admin's password (read once, on a store without users).
    #[arg(
        long,
        env = "ARBOR_ADMIN_PASSWORD",
        hide_env_values = true,
        conflicts_with = "admin_password_file"
    )]
    pub admin_password: Option<String>,
    /// A file holding the first admin's password (a mounted Secret, say).
    #[arg(long, env = "ARBOR_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// Requests handled at once; more wait their turn (streams count only while they
    /// open; health checks never wait; bodies are read before a request takes its
    /// turn). One connection, or one user, holds at most half of them. Bounds memory
    /// and CPU under a flood.
    #[arg(long, env = "ARBOR_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Keep the event log in PostgreSQL (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`),
    /// shared by every replica started with the same URL; --data-dir then holds this
    /// replica's cache of it. Default: the embedded store under --data-dir.
    #[arg(long = "store", env = "ARBOR_STORE", value_name = "URL", value_parser = shared_log_url)]
    pub store_url: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl ServeArgs {
    /// How to open the store the flags name.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            shared_log: self.store_url.clone(),
            ..self.store.store_config()
        }
    }
}

/// `--store`: a PostgreSQL URL.
fn shared_log_url(v: &str) -> Result<String, String> {
    if arbor::store::is_postgres_url(v) {
        Ok(v.to_string())
    } else {
        Err("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (without --store, the store is the embedded one under --data-dir)".into())
    }
}

fn parse_permission(text: &str) -> Result<arbor::domain::access::Permission, String> {
    arbor::domain::access::Permission::parse(&text.to_ascii_uppercase()).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// The run at the top of the tree.
    pub run_id: String,
    /// Show this metric's latest value on each run.
    #[arg(long)]
    pub metric: Option<String>,
    /// Levels below the run to show (default: all).
    #[arg(long)]
    pub max_depth: Option<u32>,
    /// Include deleted runs.
    #[arg(long)]
    pub all: bool,
    /// The server's gRPC URL.
    #[arg(long, env = "ARBOR_SERVER", default_value = "http://127.0.0.1:5000")]
    pub server: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Whether `doc` names `word` whole (`--data-dir` does not count for `--data`).
    fn mentions(doc: &str, word: &str) -> bool {
        doc.match_indices(word).any(|(at, _)| {
            let next = doc[at + word.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    }

    fn walk(cmd: &clap::Command, path: &str, doc: &str, missing: &mut Vec<String>) {
        if !path.is_empty() && !doc.contains(&format!("`arbor {path}`")) {
            missing.push(format!("the subcommand `arbor {path}`"));
        }
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long()
                && !mentions(doc, &format!("--{long}"))
            {
                missing.push(format!("`--{long}` of `arbor {path}`"));
            }
            if let Some(var) = arg.get_env().and_then(|v| v.to_str())
                && !mentions(doc, var)
            {
                missing.push(format!("`{var}` (of `--{}`)", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            let path = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path} {name}")
            };
            walk(sub, &path, doc, missing);
        }
    }

    /// Every `"ARBOR_..."` string in the sources: variables read without clap too.
    fn variables_read(dir: &std::path::Path, found: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                variables_read(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("\"ARBOR_") {
                    let name: String = text[at + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
    }

    /// docs/reference/cli.md names every subcommand, every flag and every `ARBOR_*`
    /// variable, so the reference cannot drift from the binary again.
    #[test]
    fn the_cli_reference_names_every_subcommand_flag_and_variable() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("docs/reference/cli.md")).unwrap();
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &doc, &mut missing);
        let mut vars = std::collections::BTreeSet::new();
        variables_read(&root.join("src"), &mut vars);
        assert!(vars.len() > 20, "the scan found {vars:?}");
        for var in vars {
            if !mentions(&doc, &var) {
                missing.push(format!("the variable `{var}`"));
            }
        }
        assert!(
            missing.is_empty(),
            "docs/reference/cli.md does not mention:\n{}",
            missing.join("\n")
        );
    }
}
