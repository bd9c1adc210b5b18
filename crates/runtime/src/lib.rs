//! What every Vigil service is given, and the admin endpoints that report on them.
//!
//! A service is a library crate with one entry point, `run(ctx: ServiceContext, config)`. It
//! gets the bus and the store through [`ServiceContext`], stops when
//! [`ServiceContext::shutdown`] is cancelled, and acknowledges nothing it has not finished: on
//! shutdown it stops taking new messages, finishes or abandons (without acking) what it holds,
//! and returns.

mod admin;
mod consumer;
mod flat;
pub mod trust;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use vigil_bus::Bus;
use vigil_store::Store;

pub use admin::{AdminState, RenderMetrics, router, serve as serve_admin};
pub use consumer::{Handler, Outcome, consume};
pub use flat::EventFields;

/// Everything a service needs from its process.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// The bus (JetStream or in-process).
    pub bus: Arc<dyn Bus>,
    /// The store (PostgreSQL or SQLite).
    pub store: Store,
    /// Cancelled when the process is asked to stop (SIGTERM, SIGINT).
    pub shutdown: CancellationToken,
    /// Readiness of this process, shown by `/readyz`.
    pub readiness: Readiness,
}

/// Whether the process has finished starting its services. `/readyz` answers 200 only when
/// this is set and the bus and store are reachable.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the process as started.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Marks the process as stopping: readiness drops so that traffic drains away.
    pub fn set_stopping(&self) {
        self.started.store(false, Ordering::Release);
    }

    /// Whether the process is started and not stopping.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}
