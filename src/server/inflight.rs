//! Counting in-flight requests, so that shutdown can wait for exactly them. tonic's own
//! graceful shutdown also waits for idle client connections to close, which a connected
//! client may never do; this lets the server stop as soon as the work in hand is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl InFlight {
    /// Completes when no request is being handled.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the count when the request's handler finishes or is dropped.
pub(crate) struct Guard(InFlight);

impl Drop for Guard {
    fn drop(&mut self) {
        crate::metrics::global().requests_in_flight.dec();
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl super::around::Around for InFlight {
    type Carry = Guard;

    fn before<B>(&self, _: &http::Request<B>) -> Result<Guard, Box<super::around::Response>> {
        self.count.fetch_add(1, Ordering::AcqRel);
        crate::metrics::global().requests_in_flight.inc();
        Ok(Guard(self.clone()))
    }

    fn after(guard: Guard, response: super::around::Response) -> super::around::Response {
        drop(guard);
        response
    }
}
