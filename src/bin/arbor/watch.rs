//! `arbor watch`: follows a run (or its subtree) live from a terminal. On a terminal it
//! keeps a compact table of the latest value per (run, key), redrawn in place; piped,
//! it prints one tab-separated line per point (`seq run_id key step value timestamp`).
//! After a dropped connection it reconnects and resumes from the last sequence number it
//! saw, so no point is lost or shown twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use tonic::Code;

use arbor::pb::{self, watch_metrics_request::Scope, watch_service_client::WatchServiceClient};

/// First wait before reconnecting; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct WatchOptions {
    pub server: String,
    pub run_id: String,
    pub subtree: bool,
    pub keys: Vec<String>,
    /// Absent: from now on.
    pub from_seq: Option<u64>,
    /// Draw a table in place instead of printing lines.
    pub table: bool,
}

#[derive(Default)]
struct Row {
    step: i64,
    value: f64,
    points: u64,
}

struct Table {
    rows: BTreeMap<(String, String), Row>,
    drawn: usize,
}

impl Table {
    fn update(&mut self, run_id: &str, key: &str, step: i64, value: f64) {
        let row = self
            .rows
            .entry((run_id.to_string(), key.to_string()))
            .or_default();
        row.step = step;
        row.value = value;
        row.points += 1;
    }

    fn draw(&mut self, out: &mut impl Write, seq: u64) -> std::io::Result<()> {
        if self.drawn > 0 {
            write!(out, "\x1b[{}A", self.drawn)?;
        }
        writeln!(
            out,
            "\x1b[2K{:<34} {:<24} {:>10} {:>14} {:>8}",
            "run", "key", "step", "value", "points"
        )?;
        for ((run, key), r) in &self.rows {
            writeln!(
                out,
                "\x1b[2K{run:<34} {key:<24} {:>10} {:>14.6} {:>8}",
                r.step, r.value, r.points
            )?;
        }
        writeln!(out, "\x1b[2Kseq {seq}")?;
        self.drawn = self.rows.len() + 2;
        out.flush()
    }
}

/// Whether a stream error is worth reconnecting after.
fn transient(code: Code) -> bool {
    !matches!(
        code,
        Code::NotFound
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// Watches until the server refuses the request (or forever, reconnecting as needed).
pub async fn watch(
    opts: WatchOptions,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut next = opts.from_seq;
    let mut backoff = FIRST_BACKOFF;
    let mut table = Table {
        rows: BTreeMap::new(),
        drawn: 0,
    };
    loop {
        let result: Result<std::convert::Infallible, tonic::Status> = async {
            let mut client = WatchServiceClient::connect(opts.server.clone())
                .await
                .map_err(|e| {
                    tonic::Status::unavailable(format!("cannot connect to {}: {e}", opts.server))
                })?;
            let scope = if opts.subtree {
                Scope::SubtreeRunId(opts.run_id.clone())
            } else {
                Scope::RunId(opts.run_id.clone())
            };
            let mut stream = client
                .watch_metrics(super::http::grpc_request(pb::WatchMetricsRequest {
                    scope: Some(scope),
                    keys: opts.keys.clone(),
                    from_seq: next,
                }))
                .await?
                .into_inner();
            while let Some(msg) = stream.message().await? {
                for s in &msg.series {
                    let points = s.values.iter().zip(&s.steps).zip(&s.timestamps);
                    for ((&value, &step), &timestamp) in points {
                        if opts.table {
                            table.update(&msg.run_id, &s.key, step, value);
                        } else {
                            writeln!(
                                out,
                                "{}\t{}\t{}\t{}\t{}\t{}",
                                msg.seq, msg.run_id, s.key, step, value, timestamp
                            )
                            .map_err(|e| tonic::Status::cancelled(e.to_string()))?;
                        }
                    }
                }
                if opts.table {
                    table
                        .draw(out, msg.seq)
                        .map_err(|e| tonic::Status::cancelled(e.to_string()))?;
                } else {
                    out.flush()
                        .map_err(|e| tonic::Status::cancelled(e.to_string()))?;
                }
                next = Some(msg.seq + 1);
                backoff = FIRST_BACKOFF;
            }
            Err(tonic::Status::unavailable("the stream ended"))
        }
        .await;
        let Err(status) = result;
        if !transient(status.code()) {
            return Err(format!("{}: {}", status.code(), status.message()).into());
        }
        if status.code() == Code::Cancelled {
            // Our own output failed (a closed pipe): nothing left to show.
            return Ok(());
        }
        let from = next.map_or("now".to_string(), |n| format!("seq {n}"));
        eprintln!(
            "arbor watch: connection lost ({}); resuming from {from}",
            status.message()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `arbor watch`: a table on a terminal, lines otherwise.
pub fn main(args: crate::config::WatchArgs) -> Result<(), arbor::server::BoxError> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let opts = crate::watch::WatchOptions {
        server: args.server,
        run_id: args.run_id,
        subtree: args.subtree,
        keys: args.keys,
        from_seq: args.from_seq,
        table: stdout.is_terminal(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::watch::watch(opts, &mut stdout.lock()))
}
