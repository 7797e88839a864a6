//! The event log in PostgreSQL, for replicas that share one store (`--store
//! postgres://...`). The table `arbor_log` is the truth: one row per event, keyed by a
//! gap-free sequence number. Writers append under a transaction-scoped advisory lock,
//! after reading whatever other replicas appended since they last looked, so the
//! sequence has no gap and no two writers decide on stale state. Each replica keeps the
//! log and every projection in its local sled database as a cache, kept current by
//! `LISTEN arbor_log` (every commit notifies) and rebuilt from the table when it cannot
//! be trusted.
//!
//! PostgreSQL is spoken to from a small runtime of this module's own, so that the
//! committer thread, the server's runtime and a test's runtime all reach it the same
//! way and closing the store ends every connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::db::health::{Remote, StoreState};
use crate::domain::Error;

/// Held by a writer for its transaction: one writer at a time appends, at the head.
const LOG_LOCK: i64 = 0x4172_626f_724c_6f67;
/// Held for the session while migrating, so replicas starting at once take turns.
const MIGRATION_LOCK: i64 = 0x4172_626f_724d_6967;
/// Where commits announce the new head (the payload: its sequence number).
const CHANNEL: &str = "arbor_log";
/// Longest one exchange with PostgreSQL may take; past it the connection is dropped
/// (a transaction it held rolls back) and the request answered UNAVAILABLE.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events read per query (and taken in per local batch) while catching up: a full
/// `LogBatch` event is about 20 KB, so a chunk holds up to 20 MB.
pub(crate) const FETCH_CHUNK: i64 = 1000;
/// The listener's pause before reconnecting, doubling up to the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_LONGEST: Duration = Duration::from_secs(5);

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Whether `store` names a PostgreSQL database.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// A runtime for PostgreSQL's connections; dropping it ends them (from any thread).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A shared log's connection settings and its runtime.
#[derive(Clone)]
pub(crate) struct Postgres {
    config: tokio_postgres::Config,
    rt: Arc<Runtime>,
    /// The store's identity (`arbor_meta.store_id`), recorded in each replica's cache.
    pub(crate) store_id: String,
    /// The tasks that run for the store (the listener, the head reader), ended by `stop`.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    heads: Option<mpsc::UnboundedSender<oneshot::Sender<Result<u64, Error>>>>,
}

/// What PostgreSQL's error means for a caller, with its cause (tokio-postgres keeps
/// the useful part in the source).
pub(crate) fn unavailable(e: &tokio_postgres::Error) -> Error {
    let mut text = format!("PostgreSQL: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Unavailable(text)
}

fn timed_out(what: &str) -> Error {
    Error::Unavailable(format!(
        "PostgreSQL: {what} took longer than {} s",
        EXCHANGE_TIMEOUT.as_secs()
    ))
}

impl Postgres {
    /// Connects to the database `url` names, brings its schema up to date (one replica
    /// at a time), and reads the store's identity.
    pub(crate) fn connect(url: &str) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::invalid(format!(
                "not a PostgreSQL connection URL ({e}): postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("arbor");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("arbor-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Unavailable(format!("cannot start PostgreSQL's runtime: {e}")))?;
        let mut pg = Postgres {
            config,
            rt: Arc::new(Runtime(Some(rt))),
            store_id: String::new(),
            tasks: Arc::default(),
            heads: None,
        };
        let config = pg.config.clone();
        pg.store_id = pg.block_on(async move {
            let mut client = connect(&config).await?;
            migrate(&mut client).await?;
            let row = client
                .query_one("SELECT value FROM arbor_meta WHERE key = 'store_id'", &[])
                .await
                .map_err(|e| unavailable(&e))?;
            Ok::<_, Error>(row.get::<_, String>(0))
        })?;
        Ok(pg)
    }

    /// Runs `fut` on this log's runtime and waits for it, from any thread (the caller's
    /// own runtime, if any, is blocked meanwhile: for opening and the committer only).
    pub(crate) fn block_on<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle()?.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Unavailable("PostgreSQL's runtime stopped".into()))?
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, Error> {
        self.rt
            .0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or(Error::Closed)
    }

    /// A connection for the committer's appends and catch-ups.
    pub(crate) fn writer(&self) -> Writer {
        Writer {
            pg: self.clone(),
            client: None,
        }
    }

    /// The head of the log as of a moment after this call: what a replica must hold
    /// before it answers a read, so that a write acknowledged by any replica before the
    /// read began is in the answer. Concurrent callers share one query.
    pub(crate) async fn head(&self) -> Result<u64, Error> {
        let heads = self.heads.as_ref().ok_or(Error::Closed)?;
        let (tx, rx) = oneshot::channel();
        heads.send(tx).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Starts the head reader and the listener: `wake` is called after each commit
    /// anywhere (with the new head) and after each (re)connection (with `None`);
    /// `state` hears whether PostgreSQL is reachable.
    pub(crate) fn start(
        &mut self,
        wake: impl Fn(Option<u64>) + Send + Sync + 'static,
        state: Arc<StoreState>,
    ) -> Result<(), Error> {
        let handle = self.handle()?;
        let (heads, asks) = mpsc::unbounded_channel();
        self.heads = Some(heads);
        let reader = handle.spawn(read_heads(self.config.clone(), asks));
        let listener = handle.spawn(listen(self.config.clone(), Arc::new(wake), state));
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.extend([reader, listener]);
        }
        Ok(())
    }

    /// Ends the listener and the head reader (and with them their connections).
    pub(crate) fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    /// The stored bytes of event `seq`, if the log has it.
    pub(crate) fn event(&self, seq: u64) -> Result<Option<Vec<u8>>, Error> {
        let config = self.config.clone();
        self.block_on(async move {
            let client = connect(&config).await?;
            let row = client
                .query_opt(
                    "SELECT event FROM arbor_log WHERE seq = $1",
                    &[&i64::try_from(seq).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, Error> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "PostgreSQL: connecting took longer than {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| unavailable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Applies the schema migrations not yet applied, holding a session lock so that
/// replicas starting at once do not race (the second finds them applied).
async fn migrate(client: &mut Client) -> Result<(), Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| unavailable(&e))?;
    let report = embedded::migrations::runner()
        .set_migration_table_name("arbor_schema_history")
        .run_async(client)
        .await
        .map_err(|e| Error::Unavailable(format!("PostgreSQL: migrating the schema: {e}")));
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    for m in report?.applied_migrations() {
        tracing::info!(
            version = m.version(),
            name = m.name(),
            "applied a schema migration"
        );
    }
    Ok(())
}

async fn head(client: &Client) -> Result<u64, Error> {
    let row = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        client.query_one("SELECT coalesce(max(seq), 0) FROM arbor_log", &[]),
    )
    .await
    .map_err(|_| timed_out("reading the log's head"))?
    .map_err(|e| unavailable(&e))?;
    Ok(row.get::<_, i64>(0).cast_unsigned())
}

/// Answers `head` calls: everyone waiting when a query starts shares its answer.
async fn read_heads(
    config: tokio_postgres::Config,
    mut asks: mpsc::UnboundedReceiver<oneshot::Sender<Result<u64, Error>>>,
) {
    let mut client: Option<Client> = None;
    while let Some(first) = asks.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = asks.try_recv() {
            waiting.push(more);
        }
        let answer = async {
            if client.as_ref().is_none_or(Client::is_closed) {
                client = Some(connect(&config).await?);
            }
            let c = client.as_ref().ok_or(Error::Closed)?;
            head(c).await
        }
        .await;
        if answer.is_err() {
            client = None;
        }
        for w in waiting {
            let _ = w.send(match &answer {
                Ok(h) => Ok(*h),
                Err(e) => Err(Error::Unavailable(e.to_string())),
            });
        }
    }
}

/// Listens for commits; reconnects when the connection ends, telling `state` whether
/// PostgreSQL is reachable meanwhile.
async fn listen(
    config: tokio_postgres::Config,
    wake: Arc<dyn Fn(Option<u64>) + Send + Sync>,
    state: Arc<StoreState>,
) {
    let mut pause = RECONNECT_FIRST;
    loop {
        let started = std::time::Instant::now();
        let ended = listen_once(&config, &*wake, &state).await;
        if started.elapsed() > 2 * RECONNECT_LONGEST {
            // It was up a good while: the next attempt need not wait long.
            pause = RECONNECT_FIRST;
        }
        let why = match ended {
            Ok(()) => "PostgreSQL closed the connection".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!("lost PostgreSQL's notifications ({why}); reconnecting");
        state.set_remote(Remote::Listener, Some(why));
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_LONGEST);
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    wake: &(dyn Fn(Option<u64>) + Send + Sync),
    state: &StoreState,
) -> Result<(), Error> {
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| Error::Unavailable("PostgreSQL: connecting timed out".into()))?
        .map_err(|e| unavailable(&e))?;
    let (notes, mut heard) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = notes.send(Ok(n.payload().parse::<u64>().ok()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = notes.send(Err(unavailable(&e)));
                    return;
                }
                None => return,
            }
        }
    });
    let listening = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await;
    let result = match listening {
        Err(_) => Err(timed_out("LISTEN")),
        Ok(Err(e)) => Err(unavailable(&e)),
        Ok(Ok(())) => {
            state.set_remote(Remote::Listener, None);
            // Whatever was committed while nobody listened.
            wake(None);
            loop {
                match heard.recv().await {
                    Some(Ok(seq)) => wake(seq),
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                }
            }
        }
    };
    driver.abort();
    result
}

/// The committer's connection: appends under the log's lock, and reads what others
/// appended. Reconnects on demand; any failure drops the connection (PostgreSQL rolls
/// back a transaction it held).
pub(crate) struct Writer {
    pg: Postgres,
    client: Option<Client>,
}

/// One event as stored: its sequence number and its `arbor.v1.Event` bytes.
pub(crate) type Stored = (u64, Vec<u8>);

impl Writer {
    /// Runs `work` on this writer's connection (made first if there is none), within
    /// `EXCHANGE_TIMEOUT`. Any failure drops the connection.
    fn exchange<T, F, W>(&mut self, what: &'static str, work: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: FnOnce(Client) -> F + Send + 'static,
        F: std::future::Future<Output = (Client, Result<T, Error>)> + Send,
    {
        let client = self.client.take().filter(|c| !c.is_closed());
        let config = self.pg.config.clone();
        let (client, value) = self.pg.block_on(async move {
            let client = match client {
                Some(c) => c,
                None => connect(&config).await?,
            };
            match tokio::time::timeout(EXCHANGE_TIMEOUT, work(client)).await {
                Ok((client, Ok(v))) => Ok((client, v)),
                Ok((_, Err(e))) => Err(e),
                Err(_) => Err(timed_out(what)),
            }
        })?;
        self.client = Some(client);
        Ok(value)
    }

    /// Opens a transaction holding the log's lock and returns the events appended after
    /// `after` (by other replicas): the caller applies them before deciding, then
    /// `append`s at the head, or `abort`s.
    pub(crate) fn begin(&mut self, after: u64) -> Result<Vec<Stored>, Error> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.exchange("taking the log's lock", move |c| async move {
            use tokio_postgres::types::Type;
            let lock: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
                [(&LOG_LOCK, Type::INT8)];
            let from: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
                [(&after, Type::INT8)];
            let (began, locked, rows) = tokio::join!(
                c.batch_execute("BEGIN"),
                c.query_typed("SELECT pg_advisory_xact_lock($1)", &lock),
                c.query_typed(
                    "SELECT seq, event FROM arbor_log WHERE seq > $1 ORDER BY seq",
                    &from
                ),
            );
            let result = (|| {
                began.map_err(|e| unavailable(&e))?;
                locked.map_err(|e| unavailable(&e))?;
                Ok(stored(rows.map_err(|e| unavailable(&e))?))
            })();
            (c, result)
        })
    }

    /// Appends `events` (sequence numbers right after the head `begin` saw), announces
    /// the new head and commits: once this returns `Ok` they are durable in PostgreSQL.
    /// An `Err` leaves it unknown whether the commit happened (the connection may have
    /// failed after PostgreSQL committed); the caller reads the log again to find out.
    pub(crate) fn append(&mut self, events: Vec<Stored>) -> Result<(), Error> {
        use tokio_postgres::types::Type;
        let last = events.last().map(|(seq, _)| seq.to_string());
        let (seqs, bodies): (Vec<i64>, Vec<Vec<u8>>) = events
            .into_iter()
            .map(|(seq, body)| (i64::try_from(seq).unwrap_or(i64::MAX), body))
            .unzip();
        self.exchange("appending to the log", move |c| async move {
            let Some(last) = last else {
                let r = c.batch_execute("COMMIT").await.map_err(|e| unavailable(&e));
                return (c, r);
            };
            let rows: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
                [(&seqs, Type::INT8_ARRAY), (&bodies, Type::BYTEA_ARRAY)];
            let head: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
                [(&last, Type::TEXT)];
            let notify = format!("SELECT pg_notify('{CHANNEL}', $1)");
            let (inserted, notified, committed) = tokio::join!(
                c.query_typed(
                    "INSERT INTO arbor_log (seq, event) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                    &rows
                ),
                c.query_typed(&notify, &head),
                c.simple_query("COMMIT"),
            );
            let result = (|| {
                inserted.map_err(|e| unavailable(&e))?;
                notified.map_err(|e| unavailable(&e))?;
                // (A COMMIT after a failed statement answers ROLLBACK, not an error: the
                // statements' own results say whether it committed.)
                committed.map_err(|e| unavailable(&e))?;
                Ok(())
            })();
            (c, result)
        })
    }

    /// The sequence number of the log's last event (0: empty).
    pub(crate) fn fetch_head(&mut self) -> Result<u64, Error> {
        self.exchange("reading the log's head", |c| async move {
            let h = head(&c).await;
            (c, h)
        })
    }

    /// Ends a transaction `begin` opened without appending.
    pub(crate) fn abort(&mut self) {
        let r = self.exchange("rolling back", |c| async move {
            let r = c
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| unavailable(&e));
            (c, r)
        });
        if r.is_err() {
            self.client = None;
        }
    }

    /// Up to `limit` events after `after`, in order, read without the lock (a commit is
    /// visible before the lock is released, so the rows read have no gap).
    pub(crate) fn fetch(&mut self, after: u64, limit: i64) -> Result<Vec<Stored>, Error> {
        use tokio_postgres::types::Type;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.exchange("reading the log", move |c| async move {
            let rows = c
                .query_typed(
                    "SELECT seq, event FROM arbor_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[(&after, Type::INT8), (&limit, Type::INT8)],
                )
                .await
                .map(stored)
                .map_err(|e| unavailable(&e));
            (c, rows)
        })
    }
}

fn stored(rows: Vec<tokio_postgres::Row>) -> Vec<Stored> {
    rows.into_iter()
        .map(|r| (r.get::<_, i64>(0).cast_unsigned(), r.get::<_, Vec<u8>>(1)))
        .collect()
}
