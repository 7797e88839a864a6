//! One watch session: from a starting sequence number, every committed event in order,
//! exactly once, handed to a selector that turns the events it wants into messages.

use tokio::sync::{broadcast, mpsc};

use crate::domain::Error;
use crate::pb;

use super::EventSource;

/// Events read from the log per read while catching up.
const CATCH_UP_CHUNK: usize = 512;

/// Why a session ended on the server's side.
#[derive(Debug)]
pub enum SessionEnd {
    /// The server is shutting down; every event up to `next - 1` was delivered.
    Shutdown { next: u64 },
    /// Reading the log failed.
    Failed(Error),
}

/// Where a session starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// Only events committed from now on.
    Now,
    /// From this sequence number (1 is the beginning of the log; 0 means the same).
    From(u64),
}

/// Where a session asked to start at `from_seq` (none: now) begins. A position past
/// the log's head + 1 is refused with OUT_OF_RANGE, naming the head: such a number
/// comes from another store (one restored from an older backup, say), and a stream
/// opened there would wait in silence and skip whatever comes before it.
pub(crate) fn start_at(store: &impl EventSource, from_seq: Option<u64>) -> Result<Start, Error> {
    let Some(n) = from_seq else {
        return Ok(Start::Now);
    };
    // The committed mark moves after the flush, the log's head before it: a number
    // read from the projections (a history "as of") may be past the mark already.
    let head = store.hub().committed().max(store.head()?);
    if n > head.saturating_add(1) {
        return Err(Error::OutOfRange(format!(
            "from_seq {n} is beyond the log, whose last event is {head}: resume with a sequence number from this store (at most {})",
            head + 1
        )));
    }
    Ok(Start::From(n))
}

/// Runs a session until the client goes away (the `out` channel closes) or the server
/// shuts down. `first` may make an opening message from the sequence number of the last
/// event before the session's start; `select` turns an event into a message, if any.
pub(crate) async fn run<T: Send + 'static>(
    store: impl EventSource,
    start: Start,
    first: impl FnOnce(u64) -> Option<T> + Send,
    mut select: impl FnMut(&pb::Event) -> Result<Option<T>, Error> + Send,
    out: mpsc::Sender<Result<T, SessionEnd>>,
) {
    let Some((mut rx, guard)) = store.hub().subscribe() else {
        let next = store.hub().committed() + 1;
        let _ = out.send(Err(SessionEnd::Shutdown { next })).await;
        return;
    };
    let mut next = match start {
        Start::Now => store.hub().committed() + 1,
        Start::From(n) => n.max(1),
    };
    guard.delivered(next - 1);
    if let Some(msg) = first(next - 1)
        && out.send(Ok(msg)).await.is_err()
    {
        return;
    }
    // Returns false when the client is gone.
    macro_rules! deliver {
        ($ev:expr) => {{
            let ev: &pb::Event = $ev;
            next = ev.seq + 1;
            guard.delivered(ev.seq);
            match select(ev) {
                Ok(Some(msg)) => {
                    if out.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = out.send(Err(SessionEnd::Failed(e))).await;
                    return;
                }
            }
        }};
    }
    loop {
        // Catch up from the log, never past what is durable.
        loop {
            let committed = store.hub().committed();
            if next > committed {
                break;
            }
            let events = match store.read_log(next, committed, CATCH_UP_CHUNK) {
                Ok(events) => events,
                Err(e) => {
                    let _ = out.send(Err(SessionEnd::Failed(e))).await;
                    return;
                }
            };
            if events.is_empty() {
                break;
            }
            for ev in &events {
                deliver!(ev);
            }
        }
        // Then follow the hub, until the client goes away.
        let received = tokio::select! {
            r = rx.recv() => r,
            () = out.closed() => return,
        };
        match received {
            Ok(batch) => {
                for ev in batch.iter() {
                    if ev.seq < next {
                        continue;
                    }
                    if ev.seq > next {
                        // Missed something (subscribed mid-catch-up): the log has it.
                        break;
                    }
                    deliver!(ev);
                }
            }
            // Fell behind the hub's buffer: the log has everything since `next`.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                // Deliver what was committed before the end, then say where to resume.
                let committed = store.hub().committed();
                while next <= committed {
                    match store.read_log(next, committed, CATCH_UP_CHUNK) {
                        Ok(events) if !events.is_empty() => {
                            for ev in &events {
                                deliver!(ev);
                            }
                        }
                        Ok(_) => break,
                        Err(e) => {
                            let _ = out.send(Err(SessionEnd::Failed(e))).await;
                            return;
                        }
                    }
                }
                let _ = out.send(Err(SessionEnd::Shutdown { next })).await;
                return;
            }
        }
    }
}
