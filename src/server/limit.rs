//! How many requests are handled at once (`--max-concurrent-requests`), and who may hold
//! the slots: a request takes a slot of its connection's share, then of its user's
//! share (with `--auth`), then one of the server's, and keeps them until its response
//! head. Waiting for its own share first, a client that floods the server waits behind
//! itself, holding no slot another client could use. Health checks take no slot, so a
//! load balancer's probe is never queued behind ordinary requests; nor do client
//! streams (`LogMetricStream`), which would otherwise hold one for as long as a
//! training loop runs (they are bounded by the connections and HTTP/2's streams per
//! connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Semaphore;

use super::around::{BoxFuture, Request, Response, Step};
use super::conn::ConnInfo;
use crate::auth::Caller;

/// Users' slots are kept while anyone holds them; the map of them is swept of the
/// unused ones whenever it reaches this many entries.
const SWEEP_USERS_AT: usize = 1024;

/// The most slots one connection or one user may hold: half of them (at least one),
/// so one client can never take every slot.
pub(crate) fn share(limit: usize) -> usize {
    (limit / 2).max(1)
}

/// Paths that never wait for a slot: probes.
pub(crate) fn is_probe(path: &str) -> bool {
    path == "/health" || path.starts_with("/grpc.health.v1.Health/")
}

#[derive(Clone)]
pub(crate) struct Limit {
    global: Arc<Semaphore>,
    share: usize,
    users: Arc<Mutex<HashMap<String, Weak<Semaphore>>>>,
}

impl Limit {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(limit.max(1))),
            share: share(limit),
            users: Arc::default(),
        }
    }

    /// The user's share of the slots, made on first use.
    fn user_slots(&self, name: &str) -> Arc<Semaphore> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = users.get(name).and_then(Weak::upgrade) {
            return slots;
        }
        if users.len() >= SWEEP_USERS_AT {
            users.retain(|_, w| w.strong_count() > 0);
        }
        let slots = Arc::new(Semaphore::new(self.share));
        users.insert(name.to_string(), Arc::downgrade(&slots));
        slots
    }
}

impl Step for Limit {
    fn step<S>(&self, req: Request, mut inner: S) -> BoxFuture<Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        if is_probe(req.uri().path()) || super::body::streams_request(&req) {
            return Box::pin(inner.call(req));
        }
        let connection = req.extensions().get::<ConnInfo>().map(|c| c.slots.clone());
        let user = match req.extensions().get::<Caller>() {
            Some(Caller::User(u)) => Some(self.user_slots(&u.name)),
            _ => None,
        };
        let global = self.global.clone();
        Box::pin(async move {
            // Semaphores here are never closed, so acquiring cannot fail; a request
            // that could not get a permit would go through unlimited rather than hang.
            let _connection = match connection {
                Some(s) => s.acquire_owned().await.ok(),
                None => None,
            };
            let _user = match user {
                Some(s) => s.acquire_owned().await.ok(),
                None => None,
            };
            let _global = global.acquire_owned().await.ok();
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One client holds at most half the slots, and at least one.
    #[test]
    fn a_share_is_half_the_slots() {
        assert_eq!(share(512), 256);
        assert_eq!(share(8), 4);
        assert_eq!(share(3), 1);
        assert_eq!(share(1), 1);
        assert_eq!(share(0), 1);
    }

    /// A user's slots are shared by their requests, and swept once nobody holds them.
    #[test]
    fn users_share_one_set_of_slots() {
        let layer = Limit::new(8);
        let a = layer.user_slots("alice");
        let again = layer.user_slots("alice");
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(a.available_permits(), 4);
        assert!(!Arc::ptr_eq(&a, &layer.user_slots("bob")));
        drop((a, again));
        let fresh = layer.user_slots("alice");
        assert_eq!(fresh.available_permits(), 4);
    }
}
