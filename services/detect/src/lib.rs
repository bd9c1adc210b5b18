//! The detect service: each tenant's event stream against its effective Sigma rules,
//! correlations and threat-intel feeds, published as alerts.
//!
//! Two stages (ADR 0012), both shared by every detect process:
//!
//! - Events arrive as `EventBatch`es on `vigil.<tenant>.events` through the durable consumer
//!   `detect` (so several processes split a stream without duplicates). For each batch:
//!   evaluate (in parallel over the batch's events); publish the Sigma and intel alerts to
//!   `vigil.<tenant>.alerts` with ids derived from tenant, rule and event (a redelivered batch
//!   gives the same ids, which the bus and the alert persister drop); publish the events that
//!   feed correlations as one `CorrelationBatch` per partition of the tenant's correlation state
//!   that owns their group keys (`vigil.<tenant>.correlate.<p>`); and only then acknowledge the
//!   batch. This stage keeps no state.
//! - Each partition has its own durable consumer (`detect-correlate`, partition `p`) that hands
//!   out one batch at a time to whichever process pulls. Per batch: read the partition's state
//!   (`correlation/<p>` in the store) when another process changed it, feed the batch, publish
//!   the correlation alerts, save the state by compare-and-swap, acknowledge.
//!
//! Content (rules, overrides, feeds) comes from the store, where the control plane keeps it,
//! and from configured directories; a watcher rebuilds it when either changes and swaps it in
//! between batches, so each batch is evaluated by exactly one version.

pub mod content;
pub mod evaluate;
mod metric_names;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vigil_bus::{ConsumerSpec, Delivery, OutgoingMessage};
use vigil_runtime::ServiceContext;
use vigil_schema::{
    Alert, AlertBatch, CorrelationBatch, EventBatch, EventBatchWithoutRaw, Stage, TenantId,
};
use vigil_sigma::Mappings;

use content::{Content, Sources};
use evaluate::{TenantState, correlate_batch, evaluate_batch};

/// The durable consumer every detect process shares.
pub const CONSUMER: &str = "detect";

/// The durable consumers of the correlation partitions (one per partition), shared by every
/// detect process.
pub const CORRELATE_CONSUMER: &str = "detect-correlate";

/// The name of the correlation state in the store; a partition's is `correlation/<p>`.
const STATE: &str = "correlation";

/// The correlation partitions of a per-tenant deployment: the tenant chart sets it, and the
/// NATS user the operator makes for the tenant may use exactly these partitions' consumers (a
/// user's permissions travel in its connect line, which nats-server caps at 4 KiB by default;
/// 16 partitions' permissions do not fit). The tenant chart runs at most 4 detect processes.
pub const TENANT_CORRELATION_PARTITIONS: u32 = 4;

/// The most correlation partitions a deployment may have.
pub const MAX_CORRELATION_PARTITIONS: u32 = 256;

/// The detect service's configuration (`[detect]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Only this tenant's events (a per-tenant deployment); every tenant's when unset.
    pub tenant: Option<TenantId>,
    /// Directories or files of global Sigma rules, besides the rules in the store.
    pub rules: Vec<PathBuf>,
    /// Global threat-intel feeds: files (`.json` STIX bundle or MISP event, `.csv`, anything
    /// else a plain list) or MISP feed directories (`manifest.json` and event files).
    pub intel: Vec<PathBuf>,
    /// Values for Sigma `expand` placeholders (`%admins%`).
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// How often the store and the directories are checked for changed content, in seconds.
    pub reload_secs: u64,
    /// How far behind the latest event time an event may arrive and still count in
    /// correlation windows, in seconds.
    pub allowed_lateness_secs: u64,
    /// Event batches delivered and not yet acknowledged.
    pub max_in_flight: usize,
    /// Deliveries of one batch before it goes to the dead-letter subject. Batches are
    /// redelivered for passing reasons (a store hiccup, another process saving correlation
    /// state first), so this is high.
    pub max_deliveries: u32,
    /// Partitions of each tenant's correlation state, by group key: each is worked on by one
    /// process at a time, so this bounds how many processes share a tenant's correlations.
    /// Every process of a deployment must use the same number; changing it starts open
    /// windows again.
    pub correlation_partitions: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tenant: None,
            rules: Vec::new(),
            intel: Vec::new(),
            placeholders: BTreeMap::new(),
            reload_secs: 2,
            allowed_lateness_secs: 300,
            max_in_flight: 16,
            max_deliveries: 100,
            correlation_partitions: 16,
        }
    }
}

impl Config {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.reload_secs == 0 {
            return Err("detect.reload_secs must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("detect.max_in_flight must be at least 1".into());
        }
        if self.max_deliveries < 2 {
            return Err("detect.max_deliveries must be at least 2".into());
        }
        if !(1..=MAX_CORRELATION_PARTITIONS).contains(&self.correlation_partitions) {
            return Err(format!(
                "detect.correlation_partitions must be between 1 and {MAX_CORRELATION_PARTITIONS}"
            ));
        }
        for path in self.rules.iter().chain(&self.intel) {
            if !path.exists() {
                return Err(format!("detect: {} does not exist", path.display()));
            }
        }
        Ok(())
    }

    fn sources(&self) -> Sources {
        Sources {
            rule_dirs: self.rules.clone(),
            intel_paths: self.intel.clone(),
            placeholders: self.placeholders.clone(),
        }
    }

    /// The consumer this service reads.
    pub fn consumer(&self) -> ConsumerSpec {
        let mut spec = ConsumerSpec::new(CONSUMER, Stage::Events, self.tenant.clone());
        spec.max_in_flight = self.max_in_flight;
        spec.max_deliveries = self.max_deliveries;
        spec.ack_wait = Duration::from_secs(60);
        spec
    }

    /// The consumer of one correlation partition: one batch at a time.
    pub fn partition_consumer(&self, partition: u32) -> ConsumerSpec {
        let mut spec = ConsumerSpec::new(CORRELATE_CONSUMER, Stage::Correlate, self.tenant.clone());
        spec.partition = Some(partition);
        spec.max_in_flight = 1;
        spec.max_deliveries = self.max_deliveries;
        spec.ack_wait = Duration::from_secs(60);
        spec
    }

    /// Every consumer this service reads: the events, and each correlation partition.
    pub fn consumers(&self) -> Vec<ConsumerSpec> {
        std::iter::once(self.consumer())
            .chain((0..self.correlation_partitions).map(|p| self.partition_consumer(p)))
            .collect()
    }
}

/// Why detect could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The store.
    #[error("{0}")]
    Store(#[from] vigil_store::StoreError),
    /// The bus.
    #[error("{0}")]
    Bus(#[from] vigil_bus::BusError),
    /// The mapping data or rule loading.
    #[error("{0}")]
    Sigma(#[from] vigil_sigma::SigmaError),
    /// The mapping data.
    #[error("{0}")]
    Mapping(#[from] vigil_sigma::MappingError),
    /// Rules or feeds that cannot be read.
    #[error("{0}")]
    Content(String),
    /// A stage stopped without being asked to.
    #[error("{0}")]
    Stopped(String),
}

/// Creates the consumer before any service publishes events, so that none is lost to a
/// stream without interest.
pub async fn ensure_consumer(context: &ServiceContext, config: &Config) -> Result<(), DetectError> {
    for spec in config.consumers() {
        context.bus.ensure_consumer(&spec).await?;
    }
    Ok(())
}

/// Runs detection until the context's shutdown.
pub async fn run(context: ServiceContext, config: Config) -> Result<(), DetectError> {
    config.validate().map_err(DetectError::Content)?;
    let mappings = Arc::new(Mappings::builtin()?);
    let sources = config.sources();
    let versions = context.store.platform().content_versions().await?;
    let files = fingerprint(&sources).await;
    let initial = content::load(&context.store, &sources, &mappings, None, &versions, 1).await?;
    report(&initial);
    let (content_tx, content_rx) = watch::channel(Arc::new(initial));
    let watcher = tokio::spawn(watch_content(
        context.clone(),
        sources,
        mappings,
        Duration::from_secs(config.reload_secs),
        content_tx,
        versions,
        files,
    ));
    let result = consume(&context, &config, content_rx).await;
    watcher.abort();
    result
}

/// With a file watcher, the rule and intel files are still fingerprinted every this many ticks:
/// a change a watch cannot see (a network file system) is picked up within about a minute at
/// the default `reload_secs`.
const RESCAN_TICKS: u32 = 30;

/// Whether the rule and intel files may have changed since the last look. The folders are
/// watched (inotify on Linux), so an idle service does not read the metadata of every rule file
/// each `reload_secs` (3,754 files for SigmaHQ: about 2 % of the detect benchmark's CPU). Any
/// event, a watcher error included, means "look". Where a path cannot be watched (it does not
/// exist yet, or the watch limit is reached), every tick looks, as without a watcher.
struct FileChanges {
    changed: Arc<std::sync::atomic::AtomicBool>,
    /// `None`: nothing watched, every tick looks.
    watcher: Option<notify::RecommendedWatcher>,
}

impl FileChanges {
    fn watch(sources: &Sources) -> Self {
        use notify::Watcher;
        // The first tick looks, whatever the watcher saw.
        let changed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&changed);
        let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            flag.store(true, std::sync::atomic::Ordering::Release);
        })
        .and_then(|mut watcher| {
            for path in sources.rule_dirs.iter().chain(&sources.intel_paths) {
                // A file is replaced by renaming over it (editors, Kubernetes' ConfigMaps): its
                // folder is watched, which sees that.
                let (target, mode) = if path.is_dir() {
                    (path.as_path(), notify::RecursiveMode::Recursive)
                } else {
                    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                    (
                        parent.unwrap_or(std::path::Path::new(".")),
                        notify::RecursiveMode::NonRecursive,
                    )
                };
                watcher.watch(target, mode)?;
            }
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::info!(
                    error = %err,
                    "rule and intel files are not watched; they are checked every reload interval"
                );
                None
            }
        };
        Self { changed, watcher }
    }

    /// Whether to look at the files now; clears the flag.
    fn take(&self) -> bool {
        self.watcher.is_none()
            || self
                .changed
                .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Makes the next tick look again (a reload that failed is retried).
    fn look_again(&self) {
        self.changed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

async fn fingerprint(sources: &Sources) -> u64 {
    let sources = sources.clone();
    tokio::task::spawn_blocking(move || content::files_fingerprint(&sources))
        .await
        .unwrap_or(0)
}

fn report(content: &Content) {
    let check = content.global.rules.check();
    metrics::gauge!(metric_names::RULES_LOADED).set(check.loaded as f64);
    metrics::gauge!(metric_names::RULES_REJECTED).set(check.rejected.len() as f64);
    let indicators: usize = content.global.intel.len()
        + content
            .tenants
            .values()
            .map(|t| t.intel.len())
            .sum::<usize>();
    metrics::gauge!(metric_names::INDICATORS).set(indicators as f64);
    for rejected in &check.rejected {
        tracing::debug!(path = %rejected.path.display(), reason = %rejected.reason, "rule rejected");
    }
    for (tenant, tenant_content) in &content.tenants {
        if let Some(rules) = &tenant_content.rules {
            for rejected in &rules.check().rejected {
                tracing::warn!(%tenant, path = %rejected.path.display(), reason = %rejected.reason, "tenant rule rejected");
            }
        }
    }
    for (feed, report) in &content.global.intel.reports {
        if report.skipped > 0 || report.loaded == 0 {
            tracing::info!(
                feed,
                loaded = report.loaded,
                skipped = report.skipped,
                reasons = %report.reasons.join("; "),
                "threat-intel feed partly loaded"
            );
        }
    }
    tracing::info!(
        generation = content.generation,
        rules = check.loaded,
        rejected = check.rejected.len(),
        tenants = content.tenants.len(),
        indicators,
        "detection content loaded"
    );
}

/// Polls the store's content versions and the files; rebuilds and publishes new content when
/// either changed. A failed rebuild keeps the content in use.
async fn watch_content(
    context: ServiceContext,
    sources: Sources,
    mappings: Arc<Mappings>,
    every: Duration,
    content_tx: watch::Sender<Arc<Content>>,
    mut versions: vigil_store::ContentVersions,
    mut files: u64,
) {
    let mut generation = 1;
    let changes = FileChanges::watch(&sources);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        ticks = ticks.wrapping_add(1);
        let current = match context.store.platform().content_versions().await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(error = %err, "cannot check detection content for changes");
                continue;
            }
        };
        let current_files = if changes.take() || ticks.is_multiple_of(RESCAN_TICKS) {
            fingerprint(&sources).await
        } else {
            files
        };
        if current == versions && current_files == files {
            continue;
        }
        let previous = content_tx.borrow().clone();
        let loaded = content::load(
            &context.store,
            &sources,
            &mappings,
            Some((&previous, &versions, current_files != files)),
            &current,
            generation + 1,
        )
        .await;
        match loaded {
            Ok(content) => {
                generation += 1;
                metrics::counter!(metric_names::RELOADS, "outcome" => "success").increment(1);
                report(&content);
                versions = current;
                files = current_files;
                let _ = content_tx.send(Arc::new(content));
            }
            Err(err) => {
                metrics::counter!(metric_names::RELOADS, "outcome" => "failure").increment(1);
                changes.look_again();
                tracing::warn!(error = %err, "detection content not reloaded, the previous stays");
            }
        }
    }
}

/// A batch evaluated, waiting for its alerts and correlation batches to be published.
struct Evaluated {
    delivery: Delivery,
    tenant: TenantId,
    /// The batch's alerts, being encoded on rayon's pool.
    alerts: tokio::sync::oneshot::Receiver<vigil_bus::Result<Vec<OutgoingMessage>>>,
    /// How many alerts they hold.
    alert_count: usize,
    correlate: Vec<CorrelationBatch>,
}

/// How long a batch redelivered for a passing reason waits: 250 ms, doubling with each
/// delivery, at most 10 s.
fn retry_delay(delivery: &Delivery) -> Duration {
    let doublings = delivery.deliveries.saturating_sub(1).min(6);
    Duration::from_millis(250 << doublings).min(Duration::from_secs(10))
}

/// Opens every partition's consumer, then runs both stages until shutdown: the partitions
/// listen before the first stage can route anything to them.
async fn consume(
    context: &ServiceContext,
    config: &Config,
    content_rx: watch::Receiver<Arc<Content>>,
) -> Result<(), DetectError> {
    let lateness = i64::try_from(config.allowed_lateness_secs).unwrap_or(i64::MAX);
    let mut partitions = tokio::task::JoinSet::new();
    for partition in 0..config.correlation_partitions {
        let subscription = context
            .bus
            .subscribe(config.partition_consumer(partition))
            .await?;
        partitions.spawn(correlate_partition(
            context.clone(),
            subscription,
            partition,
            config.correlation_partitions,
            content_rx.clone(),
            lateness,
        ));
    }
    // Either stage stopping for any reason but shutdown stops the service: a partition nobody
    // works on would hold its tenants' correlations back unseen.
    let mut events = std::pin::pin!(detect_events(context, config, content_rx));
    let result = loop {
        tokio::select! {
            result = &mut events => break result,
            Some(stopped) = partitions.join_next() => match stopped {
                Ok(Ok(())) => {}
                Ok(Err(err)) => break Err(err),
                Err(err) => break Err(DetectError::Stopped(format!("a correlation partition failed: {err}"))),
            },
        }
    };
    if !context.shutdown.is_cancelled() {
        partitions.abort_all();
    }
    while partitions.join_next().await.is_some() {}
    result
}

/// The first stage, in four steps, each its own task: one takes batches and has them decoded;
/// this one evaluates them (rayon across the batch's events); a third sends each batch's alerts,
/// once encoded, and its correlation batches; a fourth waits for their acknowledgements and then
/// acknowledges the batch, in order.
///
/// Decoding a batch and encoding its alerts are single jobs on rayon's pool, the pool that
/// evaluates: they fill the pool's idle tail of the evaluation in progress instead of running
/// between batches, and they never add threads to the two cores' worth that evaluation uses
/// (a thread of the blocking pool beside rayon's made the service slower).
async fn detect_events(
    context: &ServiceContext,
    config: &Config,
    content_rx: watch::Receiver<Arc<Content>>,
) -> Result<(), DetectError> {
    let subscription = context.bus.subscribe(config.consumer()).await?;
    let (decoded_tx, mut decoded_rx) = tokio::sync::mpsc::channel::<Decoded>(1);
    let decoder = tokio::spawn(decode_stage(context.clone(), subscription, decoded_tx));
    let (evaluated_tx, evaluated_rx) = tokio::sync::mpsc::channel::<Evaluated>(2);
    let publisher = tokio::spawn(publish_stage(context.clone(), evaluated_rx));
    let mut routers: HashMap<TenantId, TenantState> = HashMap::new();
    // Until the decoder stops (shutdown, or the end of the subscription); batches it already
    // decoded are still evaluated.
    while let Some(decoded) = decoded_rx.recv().await {
        let content = content_rx.borrow().clone();
        let span = decoded.span.clone();
        let evaluated = tracing::Instrument::instrument(
            evaluate(
                &content,
                &mut routers,
                decoded,
                config.correlation_partitions,
            ),
            span,
        )
        .await;
        if let Some(evaluated) = evaluated
            && evaluated_tx.send(evaluated).await.is_err()
        {
            break;
        }
    }
    drop(decoded_rx);
    let result = match decoder.await {
        Ok(result) => result,
        Err(err) => Err(DetectError::Stopped(format!(
            "the event decoder failed: {err}"
        ))),
    };
    // Batches already evaluated are published and settled; the rest are redelivered.
    drop(evaluated_tx);
    let _ = publisher.await;
    tracing::debug!("detect consumer stopped");
    result
}

/// A batch taken and decoded, waiting to be evaluated.
struct Decoded {
    delivery: Delivery,
    /// The batch's span, a child of its publisher's.
    span: tracing::Span,
    /// The batch, or why it can never be evaluated.
    batch: Result<EventBatch, String>,
}

/// Runs `job` on rayon's pool; its result arrives on the receiver, which is closed empty only
/// if the job panicked. Awaiting it does not block the runtime.
fn on_pool<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = done_tx.send(job());
    });
    done_rx
}

/// Takes batches and has them decoded until shutdown or the end of the subscription.
async fn decode_stage(
    context: ServiceContext,
    mut subscription: vigil_bus::Subscription,
    decoded_tx: tokio::sync::mpsc::Sender<Decoded>,
) -> Result<(), DetectError> {
    loop {
        let delivery = match next_delivery(&context, &mut subscription).await {
            Next::Delivery(delivery) => delivery,
            Next::Shutdown => return Ok(()),
            Next::Closed => return Err(DetectError::Bus(vigil_bus::BusError::Closed)),
        };
        let span = tracing::debug_span!("detect", tenant = %delivery.subject.tenant);
        delivery.follow(&span);
        let decoded = on_pool(move || {
            // Detection never reads the raw records: they are skipped unparsed, not unescaped
            // into strings that would only be dropped again.
            let batch = delivery
                .decode::<EventBatchWithoutRaw>()
                .map(EventBatchWithoutRaw::into_batch)
                .map_err(|err| err.to_string())
                .and_then(|batch| batch.validate().map(|()| batch));
            Decoded {
                delivery,
                span,
                batch,
            }
        })
        .await;
        let Ok(decoded) = decoded else {
            // The delivery went with the job; it is redelivered after the ack wait.
            tracing::warn!("decoding a batch failed");
            continue;
        };
        if decoded_tx.send(decoded).await.is_err() {
            return Ok(());
        }
    }
}

/// What a consumer loop gets next.
enum Next {
    Delivery(Delivery),
    Shutdown,
    Closed,
}

/// The next delivery, or shutdown, or the end of the subscription; consumer errors are logged
/// and retried after 100 ms.
async fn next_delivery(
    context: &ServiceContext,
    subscription: &mut vigil_bus::Subscription,
) -> Next {
    loop {
        let next = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => return Next::Shutdown,
            next = subscription.next() => next,
        };
        match next {
            Some(Ok(delivery)) => return Next::Delivery(delivery),
            Some(Err(err)) => {
                let consumer = subscription.spec().durable_name();
                tracing::debug!(%consumer, error = %err, "consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => return Next::Closed,
        }
    }
}

/// Evaluates one decoded batch and has its alerts encoded; `None` when it was settled here
/// (undecodable or refused).
async fn evaluate(
    content: &Arc<Content>,
    routers: &mut HashMap<TenantId, TenantState>,
    decoded: Decoded,
    partitions: u32,
) -> Option<Evaluated> {
    let Decoded {
        delivery,
        span,
        batch,
    } = decoded;
    let tenant = delivery.subject.tenant.clone();
    let batch = match batch {
        Ok(batch) => batch,
        Err(reason) => {
            // An undecodable batch, or one holding another tenant's event: it can never be
            // evaluated; it goes to the dead-letter subject with the reason.
            metrics::counter!(metric_names::BATCHES_REFUSED).increment(1);
            tracing::debug!(%tenant, %reason, "event batch refused");
            let _ = delivery.dead_letter("detect", &reason).await;
            return None;
        }
    };
    let tenant_content = content.tenant(&tenant).cloned();
    let router = match routers.remove(&tenant) {
        Some(mut router) => {
            router.follow(content, tenant_content.as_deref());
            router
        }
        None => TenantState::new(content, tenant_content.as_deref()),
    };
    let content = Arc::clone(content);
    let batch_tenant = tenant.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let result = evaluate_batch(
            &content,
            &batch_tenant,
            &router,
            &batch.events,
            &batch.message_id(),
            partitions,
            time::OffsetDateTime::now_utc(),
        );
        metrics::counter!(metric_names::EVENTS).increment(batch.events.len() as u64);
        // Freeing the events took a tenth of the service's time, here, while both of rayon's
        // threads waited for the next batch: on the pool it overlaps that batch's evaluation.
        rayon::spawn(move || drop(batch));
        (router, result)
    })
    .await;
    let (router, result) = match evaluated {
        Ok(done) => done,
        Err(err) => {
            // The delivery is dropped unsettled and redelivered after the ack wait.
            tracing::warn!(%tenant, error = %err, "evaluating a batch failed");
            return None;
        }
    };
    routers.insert(tenant.clone(), router);
    metrics::counter!(metric_names::SUPPRESSED).increment(result.suppressed);
    let alert_count = result.alerts.len();
    let (alerts_tenant, raised) = (tenant.clone(), result.alerts);
    let alerts = on_pool(move || {
        // The alerts carry the batch's trace context.
        let _entered = span.enter();
        alert_messages(&alerts_tenant, raised)
    });
    Some(Evaluated {
        delivery,
        tenant,
        alerts,
        alert_count,
        correlate: result.correlate,
    })
}

/// A batch whose messages were sent, waiting for the bus's acknowledgements.
struct Sent {
    item: Evaluated,
    acks: Result<Vec<vigil_bus::AckFuture>, ()>,
}

/// Sends each evaluated batch's messages without waiting for the bus, so those of several
/// batches are in flight at once; [`settle_stage`] waits for them in order.
async fn publish_stage(
    context: ServiceContext,
    mut evaluated_rx: tokio::sync::mpsc::Receiver<Evaluated>,
) {
    let (sent_tx, sent_rx) = tokio::sync::mpsc::channel::<Sent>(8);
    let settler = tokio::spawn(settle_stage(sent_rx));
    while let Some(mut item) = evaluated_rx.recv().await {
        let mut acks = match (&mut item.alerts).await {
            Ok(Ok(messages)) => send_alerts(&context, &item.tenant, messages).await,
            // Alerts always encode as JSON; should compression ever fail (or the job panic),
            // the batch is redelivered until it goes to the dead-letter subject.
            failed => {
                let error = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => "the encoding job panicked".to_owned(),
                };
                tracing::warn!(tenant = %item.tenant, %error, "encoding alerts failed, the batch will be redelivered");
                Err(())
            }
        };
        if let Ok(pending) = &mut acks {
            match send_correlation_batches(&context, &item.tenant, &item.correlate).await {
                Ok(more) => pending.extend(more),
                Err(()) => acks = Err(()),
            }
        }
        if sent_tx.send(Sent { item, acks }).await.is_err() {
            break;
        }
    }
    drop(sent_tx);
    let _ = settler.await;
}

/// Waits for each batch's messages to be acknowledged, then acknowledges the batch; on any
/// failure the batch is redelivered (what it published comes out again with the same ids and
/// is dropped as a duplicate).
async fn settle_stage(mut sent_rx: tokio::sync::mpsc::Receiver<Sent>) {
    while let Some(Sent { item, acks }) = sent_rx.recv().await {
        let outcome = match acks {
            Ok(acks) => await_acks(&item.tenant, acks).await,
            Err(()) => Err(()),
        };
        let Evaluated {
            delivery,
            alert_count,
            ..
        } = item;
        let settled = match outcome {
            Ok(()) => {
                metrics::counter!(metric_names::ALERTS).increment(alert_count as u64);
                delivery.ack().await
            }
            Err(()) => {
                let delay = retry_delay(&delivery);
                delivery.nak(Some(delay)).await
            }
        };
        if let Err(err) = settled {
            tracing::debug!(error = %err, "settling an event batch failed");
        }
    }
}

/// The store row of a partition's correlation state.
fn state_name(partition: u32) -> String {
    format!("{STATE}/{partition}")
}

/// The second stage for one partition: its correlation batches one at a time (the consumer
/// hands out one message until it is settled, to whichever process pulls), each fed to the
/// tenant's state of this partition, its alerts published, the state saved by
/// compare-and-swap, and only then acknowledged.
async fn correlate_partition(
    context: ServiceContext,
    mut subscription: vigil_bus::Subscription,
    partition: u32,
    partitions: u32,
    content_rx: watch::Receiver<Arc<Content>>,
    lateness: i64,
) -> Result<(), DetectError> {
    let mut states: HashMap<TenantId, TenantState> = HashMap::new();
    loop {
        let delivery = match next_delivery(&context, &mut subscription).await {
            Next::Delivery(delivery) => delivery,
            Next::Shutdown => break,
            Next::Closed => return Err(DetectError::Bus(vigil_bus::BusError::Closed)),
        };
        let span = tracing::debug_span!("correlate", tenant = %delivery.subject.tenant, partition);
        delivery.follow(&span);
        let content = content_rx.borrow().clone();
        tracing::Instrument::instrument(
            correlate_one(
                &context,
                &content,
                &mut states,
                delivery,
                (partition, partitions),
                lateness,
            ),
            span,
        )
        .await;
    }
    tracing::debug!(partition, "correlation consumer stopped");
    Ok(())
}

/// Handles one correlation batch of a partition and settles it.
async fn correlate_one(
    context: &ServiceContext,
    content: &Arc<Content>,
    states: &mut HashMap<TenantId, TenantState>,
    delivery: Delivery,
    (partition, partitions): (u32, u32),
    lateness: i64,
) {
    let tenant = delivery.subject.tenant.clone();
    let batch = match delivery.decode::<CorrelationBatch>() {
        Ok(batch) => batch,
        Err(err) => {
            metrics::counter!(metric_names::BATCHES_REFUSED).increment(1);
            let _ = delivery.dead_letter("correlate", &err.to_string()).await;
            return;
        }
    };
    let misplaced = (batch.partition != partition).then(|| {
        format!(
            "correlation batch for partition {} arrived on partition {partition}",
            batch.partition
        )
    });
    if let Some(reason) = batch.validate().err().or(misplaced) {
        metrics::counter!(metric_names::BATCHES_REFUSED).increment(1);
        tracing::debug!(%tenant, %reason, "correlation batch refused");
        let _ = delivery.dead_letter("correlate", &reason).await;
        return;
    }
    let tenant_content = content.tenant(&tenant).cloned();
    let mut state = match states.remove(&tenant) {
        Some(mut state) => {
            state.follow(content, tenant_content.as_deref());
            state
        }
        None => TenantState::new(content, tenant_content.as_deref()),
    };
    let fresh = || TenantState::new(content, tenant_content.as_deref());
    if let Err(err) = sync_state(context, &tenant, (partition, partitions), &mut state, fresh).await
    {
        tracing::warn!(%tenant, partition, error = %err, "cannot read correlation state, retrying");
        states.insert(tenant, state);
        let delay = retry_delay(&delivery);
        let _ = delivery.nak(Some(delay)).await;
        return;
    }
    let result = correlate_batch(
        content,
        &mut state,
        &batch,
        lateness,
        time::OffsetDateTime::now_utc(),
    );
    metrics::counter!(metric_names::LATE).increment(result.late);
    metrics::counter!(metric_names::SUPPRESSED).increment(result.suppressed);
    let alert_count = result.alerts.len();
    // One message per correlation alert: a batch redone on another process's newer state may
    // raise a different set of alerts, and a message id per alert keeps each once on the bus.
    let messages: vigil_bus::Result<Vec<Vec<OutgoingMessage>>> = result
        .alerts
        .into_iter()
        .map(|alert| alert_messages(&tenant, vec![alert]))
        .collect();
    let sent = match messages.map(|messages| messages.concat()) {
        Ok(messages) => send_alerts(context, &tenant, messages).await,
        Err(err) => {
            tracing::warn!(%tenant, error = %err, "encoding alerts failed, the batch will be redelivered");
            Err(())
        }
    };
    let mut outcome = match sent {
        Ok(acks) => await_acks(&tenant, acks).await,
        Err(()) => Err(()),
    };
    if outcome.is_ok() && result.dirty {
        let expected = state.stored_version;
        outcome = save_state(context, &tenant, partition, expected, state.snapshot()).await;
        if outcome.is_ok() {
            state.stored_version = Some(expected.map_or(1, |version| version + 1));
        }
    }
    let settled = match outcome {
        Ok(()) => {
            metrics::counter!(metric_names::ALERTS).increment(alert_count as u64);
            delivery.ack().await
        }
        Err(()) => {
            // The state in memory counted the batch: read the stored one before going on.
            state.synced = false;
            let delay = retry_delay(&delivery);
            delivery.nak(Some(delay)).await
        }
    };
    if let Err(err) = settled {
        tracing::debug!(error = %err, "settling a correlation batch failed");
    }
    states.insert(tenant, state);
}

async fn save_state(
    context: &ServiceContext,
    tenant: &TenantId,
    partition: u32,
    expected: Option<i64>,
    body: Vec<u8>,
) -> Result<(), ()> {
    let now = vigil_store::micros(time::OffsetDateTime::now_utc());
    match context
        .store
        .tenant(tenant)
        .put_detect_state(&state_name(partition), expected, body, now)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            // Another process saved first (it held the partition while this one was slow):
            // redo the batch on its state. Alerts already published come out with the same
            // ids and are dropped downstream.
            metrics::counter!(metric_names::STATE_CONFLICTS).increment(1);
            Err(())
        }
        Err(err) => {
            tracing::warn!(%tenant, error = %err, "saving correlation state failed, retrying");
            Err(())
        }
    }
}

/// Rereads a partition's stored correlation state when it is newer than the one in memory.
/// A partition with no stored state yet takes its share of the state saved whole before
/// correlation state was partitioned, if there is one.
async fn sync_state(
    context: &ServiceContext,
    tenant: &TenantId,
    (partition, partitions): (u32, u32),
    state: &mut TenantState,
    fresh: impl Fn() -> TenantState,
) -> Result<(), vigil_store::StoreError> {
    if !state.correlates() {
        return Ok(());
    }
    let scope = context.store.tenant(tenant);
    let name = state_name(partition);
    let stored = scope.detect_state_version(&name).await?;
    if state.synced && stored == state.stored_version {
        return Ok(());
    }
    // Always from a fresh state: windows in memory may hold batches redelivered since.
    *state = fresh();
    match scope.detect_state(&name).await? {
        Some((version, body)) => {
            if let Err(reason) = state.restore(&body) {
                // An unreadable state (a correlation rule changed shape): start its windows
                // again rather than stop the tenant's detection.
                tracing::warn!(%tenant, partition, %reason, "correlation state not restored, windows start again");
                *state = fresh();
            }
            state.stored_version = Some(version);
        }
        None => {
            if let Some((_, body)) = scope.detect_state(STATE).await?
                && let Err(reason) = state.restore_partition(&body, partition, partitions)
            {
                tracing::warn!(%tenant, partition, %reason, "unpartitioned correlation state not restored");
                *state = fresh();
            }
            state.stored_version = None;
        }
    }
    state.synced = true;
    Ok(())
}

/// Sends correlation batches to their partitions, compressed like event batches.
async fn send_correlation_batches(
    context: &ServiceContext,
    tenant: &TenantId,
    batches: &[CorrelationBatch],
) -> Result<Vec<vigil_bus::AckFuture>, ()> {
    send(
        context,
        tenant,
        batches,
        "correlation batches",
        |batch: &CorrelationBatch| OutgoingMessage::encode_compressed(batch, batch.message_id()),
    )
    .await
}

/// The most bytes of one alert message, compressed: a batch's alerts that encode to more are
/// split over several messages, well under nats-server's default `max_payload` of 1 MiB.
const MAX_ALERT_MESSAGE_BYTES: usize = 512 * 1024;

/// A tenant's alerts as `AlertBatch` messages (ADR 0013): one for all of them unless it would
/// exceed [`MAX_ALERT_MESSAGE_BYTES`], then halves, in order. The trace context of the span
/// current here rides in each message's headers.
fn alert_messages(
    tenant: &TenantId,
    alerts: Vec<Alert>,
) -> vigil_bus::Result<Vec<OutgoingMessage>> {
    let mut messages = Vec::new();
    let mut chunks = vec![alerts];
    while let Some(chunk) = chunks.pop() {
        if chunk.is_empty() {
            continue;
        }
        let batch = AlertBatch {
            tenant: tenant.clone(),
            alerts: chunk,
        };
        let message = OutgoingMessage::encode_compressed(&batch, batch.message_id())?;
        if message.payload.len() > MAX_ALERT_MESSAGE_BYTES && batch.alerts.len() > 1 {
            let mut first = batch.alerts;
            let second = first.split_off(first.len() / 2);
            chunks.push(second);
            chunks.push(first);
        } else {
            messages.push(message);
        }
    }
    Ok(messages)
}

/// Sends a batch's alert messages.
async fn send_alerts(
    context: &ServiceContext,
    tenant: &TenantId,
    messages: Vec<OutgoingMessage>,
) -> Result<Vec<vigil_bus::AckFuture>, ()> {
    send(context, tenant, messages, "alerts", Ok).await
}

/// Sends `items` of a batch of `tenant`; each returned future resolves when the bus holds its
/// message. A failure stops at once: the batch is redelivered and sends everything again.
async fn send<T>(
    context: &ServiceContext,
    tenant: &TenantId,
    items: impl IntoIterator<Item = T>,
    what: &str,
    encode: impl Fn(T) -> vigil_bus::Result<OutgoingMessage>,
) -> Result<Vec<vigil_bus::AckFuture>, ()> {
    let mut pending = Vec::new();
    for item in items {
        let sent = match encode(item) {
            Ok(message) => context.bus.publish(message).await,
            Err(err) => Err(err),
        };
        match sent {
            Ok(ack) => pending.push(ack),
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "publishing {what} failed, the batch will be redelivered");
                return Err(());
            }
        }
    }
    Ok(pending)
}

async fn await_acks(tenant: &TenantId, acks: Vec<vigil_bus::AckFuture>) -> Result<(), ()> {
    for ack in acks {
        if let Err(err) = ack.await {
            tracing::warn!(%tenant, error = %err, "publishing alerts failed, the batch will be redelivered");
            return Err(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use vigil_schema::{AlertId, AlertSource, Entities, EventId, Level, MatchedField};

    fn sources(rule_dirs: Vec<PathBuf>, intel_paths: Vec<PathBuf>) -> Sources {
        Sources {
            rule_dirs,
            intel_paths,
            placeholders: BTreeMap::new(),
        }
    }

    /// Waits up to five seconds for the watcher to see a change.
    fn seen(changes: &FileChanges) -> bool {
        (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            changes.take()
        })
    }

    #[test]
    fn watched_files_are_looked_at_only_after_a_change() {
        let rules = tempfile::tempdir().unwrap();
        let nested = rules.path().join("windows");
        std::fs::create_dir(&nested).unwrap();
        let feeds = tempfile::tempdir().unwrap();
        let feed = feeds.path().join("feed.txt");
        std::fs::write(&feed, "203.0.113.7\n").unwrap();
        let changes = FileChanges::watch(&sources(vec![rules.path().into()], vec![feed.clone()]));
        assert!(changes.take(), "the first tick looks");
        assert!(!changes.take(), "nothing changed");

        std::fs::write(nested.join("new.yml"), "title: t\n").unwrap();
        assert!(seen(&changes), "a rule file added in a subfolder");
        std::thread::sleep(Duration::from_millis(200));
        let _ = changes.take();
        assert!(!changes.take());

        // A feed replaced by renaming over it, as editors and ConfigMaps do.
        let fresh = feeds.path().join("feed.txt.tmp");
        std::fs::write(&fresh, "198.51.100.9\n").unwrap();
        std::fs::rename(&fresh, &feed).unwrap();
        assert!(seen(&changes), "a feed replaced");

        changes.look_again();
        assert!(changes.take(), "a failed reload is retried");
    }

    #[test]
    fn unwatchable_paths_are_looked_at_every_tick() {
        let missing = std::env::temp_dir().join("vigil-no-such-rules-folder/rules");
        let changes = FileChanges::watch(&sources(vec![missing], vec![]));
        assert!(changes.take());
        assert!(changes.take());
    }

    /// An alert whose matched value is `len` bytes that zstd cannot shrink much.
    fn alert(tenant: &TenantId, n: u64, len: usize) -> Alert {
        let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let value: String = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[(state % 36) as usize])
            })
            .collect();
        let now = time::OffsetDateTime::UNIX_EPOCH;
        Alert {
            id: AlertId::derive(&[&n.to_le_bytes()]),
            tenant: tenant.clone(),
            source: AlertSource::Sigma,
            rule_id: "rule".into(),
            rule_title: "Rule".into(),
            level: Level::High,
            attack: Vec::new(),
            event_ids: vec![EventId::derive(&[&n.to_le_bytes()])],
            matched: vec![MatchedField {
                field: "CommandLine".into(),
                value,
            }],
            entities: Entities::default(),
            intel: None,
            event_time: now,
            detected_time: now,
        }
    }

    fn decoded(message: &OutgoingMessage) -> AlertBatch {
        let payload = zstd::decode_all(&message.payload[..]).unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    #[test]
    fn a_batch_of_alerts_is_one_message_with_a_stable_id() {
        let tenant = TenantId::new("acme").unwrap();
        let alerts: Vec<Alert> = (0..600).map(|n| alert(&tenant, n, 40)).collect();
        let messages = alert_messages(&tenant, alerts.clone()).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].subject.to_string(), "vigil.acme.alerts");
        assert_eq!(decoded(&messages[0]).alerts, alerts);
        let again = alert_messages(&tenant, alerts).unwrap();
        assert_eq!(again[0].id, messages[0].id);
        assert!(alert_messages(&tenant, Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn alerts_past_the_message_limit_are_split_in_order() {
        let tenant = TenantId::new("acme").unwrap();
        // About 2.4 MB of JSON that compresses to about 1.5 MB.
        let alerts: Vec<Alert> = (0..300).map(|n| alert(&tenant, n, 8_000)).collect();
        let messages = alert_messages(&tenant, alerts.clone()).unwrap();
        assert!(messages.len() >= 3, "{} messages", messages.len());
        for message in &messages {
            assert!(message.payload.len() <= MAX_ALERT_MESSAGE_BYTES);
        }
        let back: Vec<Alert> = messages
            .iter()
            .flat_map(|message| decoded(message).alerts)
            .collect();
        assert_eq!(back, alerts);
        // One alert larger than the limit still goes, alone.
        let huge = alert(&tenant, 1_000, MAX_ALERT_MESSAGE_BYTES * 2);
        let messages = alert_messages(&tenant, vec![huge.clone(), alert(&tenant, 1, 10)]).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(decoded(&messages[0]).alerts, vec![huge]);
    }
}
