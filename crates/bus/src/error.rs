/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus could not be reached or configured at start.
    #[error("cannot connect to the bus at {url}: {reason}")]
    Connect {
        /// The bus URL, without credentials.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A publish was not accepted.
    #[error("publish to {subject} failed: {reason}")]
    Publish {
        /// The subject.
        subject: String,
        /// What failed.
        reason: String,
    },
    /// Backpressure lasted longer than the publish timeout.
    #[error("publish to {subject} timed out after {seconds} s waiting for room in the stream")]
    Backpressure {
        /// The subject.
        subject: String,
        /// How long the publish waited.
        seconds: u64,
    },
    /// Creating or updating a stream failed.
    #[error("cannot create or update stream {name}: {reason}")]
    Stream {
        /// The stream name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// Creating or reading a consumer failed.
    #[error("consumer {name}: {reason}")]
    Consumer {
        /// The durable consumer name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A consumer spec is invalid.
    #[error("invalid consumer: {0}")]
    InvalidConsumer(String),
    /// Acknowledging a message failed; it will be redelivered.
    #[error("acknowledgement failed: {0}")]
    Ack(String),
    /// A subject is not of the form `vigil.<tenant>.<stage>`.
    #[error("invalid subject {subject:?}: {reason}")]
    Subject {
        /// The subject.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A payload could not be encoded or decoded.
    #[error("{0}")]
    Codec(String),
    /// The bus is shut down.
    #[error("the bus is closed")]
    Closed,
}

/// Result with [`BusError`].
pub type Result<T, E = BusError> = std::result::Result<T, E>;
