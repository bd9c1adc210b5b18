//! The detect service: each tenant's event stream against its effective Sigma rules,
//! correlations and threat-intel feeds, published as alerts.
//!
//! Events arrive as `EventBatch`es on `vigil.<tenant>.events` through the durable consumer
//! `detect`, shared by every detect process (so several processes split a stream without
//! duplicates). For each batch: evaluate (in parallel over the batch's events), publish the
//! alerts to `vigil.<tenant>.alerts` with ids derived from tenant, rule and event (a redelivered
//! batch gives the same ids, which the bus and the alert persister drop), save the tenant's
//! correlation state when it changed, and only then acknowledge the batch.
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
use vigil_schema::{Alert, EventBatch, Stage, TenantId};
use vigil_sigma::Mappings;

use content::{Content, Sources};
use evaluate::{TenantState, evaluate_batch};

/// The durable consumer every detect process shares.
pub const CONSUMER: &str = "detect";

/// The name of the correlation state in the store.
const STATE: &str = "correlation";

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
}

/// Creates the consumer before any service publishes events, so that none is lost to a
/// stream without interest.
pub async fn ensure_consumer(context: &ServiceContext, config: &Config) -> Result<(), DetectError> {
    context.bus.ensure_consumer(&config.consumer()).await?;
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
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let current = match context.store.platform().content_versions().await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(error = %err, "cannot check detection content for changes");
                continue;
            }
        };
        let current_files = fingerprint(&sources).await;
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
                tracing::warn!(error = %err, "detection content not reloaded, the previous stays");
            }
        }
    }
}

/// A batch evaluated, waiting for its alerts to be published and its state saved.
struct Evaluated {
    delivery: Delivery,
    tenant: TenantId,
    /// The tenant state's epoch it was evaluated in (see [`Progress`]).
    epoch: u64,
    alerts: Vec<Alert>,
    /// The correlation state after this batch, with the stored version it replaces.
    save: Option<(Option<i64>, Vec<u8>)>,
}

/// What the publishing stage tells the evaluating stage. A batch's publication or state save
/// that fails makes every later batch of that tenant evaluated in the same epoch wrong (they
/// built on its state): they are redelivered, and the evaluating stage rereads the state.
#[derive(Default)]
struct Progress {
    /// Per tenant, the latest epoch that failed.
    failed: HashMap<TenantId, u64>,
    /// Per tenant, state saves handed to the publishing stage and not finished.
    pending_saves: HashMap<TenantId, usize>,
}

type SharedProgress = Arc<std::sync::Mutex<Progress>>;

/// How long a batch redelivered for a passing reason waits: 250 ms, doubling with each
/// delivery, at most 10 s.
fn retry_delay(delivery: &Delivery) -> Duration {
    let doublings = delivery.deliveries.saturating_sub(1).min(6);
    Duration::from_millis(250 << doublings).min(Duration::from_secs(10))
}

fn lock(progress: &SharedProgress) -> std::sync::MutexGuard<'_, Progress> {
    progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Three stages: this task takes batches and evaluates them (decoding and evaluating on the
/// blocking pool, rayon across the batch); a second sends each batch's alerts; a third waits
/// for their acknowledgements, saves the batch's state and settles it, in order. Evaluation
/// continues while the bus acknowledges earlier batches' alerts.
async fn consume(
    context: &ServiceContext,
    config: &Config,
    content_rx: watch::Receiver<Arc<Content>>,
) -> Result<(), DetectError> {
    let mut subscription = context.bus.subscribe(config.consumer()).await?;
    let lateness = i64::try_from(config.allowed_lateness_secs).unwrap_or(i64::MAX);
    let mut states: HashMap<TenantId, TenantState> = HashMap::new();
    let progress = SharedProgress::default();
    let (evaluated_tx, evaluated_rx) = tokio::sync::mpsc::channel::<Evaluated>(2);
    let publisher = tokio::spawn(publish_stage(
        context.clone(),
        evaluated_rx,
        Arc::clone(&progress),
    ));
    let mut result = Ok(());
    loop {
        let next = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => break,
            next = subscription.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => {
                tracing::debug!(error = %err, "detect consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            None => {
                result = Err(DetectError::Bus(vigil_bus::BusError::Closed));
                break;
            }
        };
        let span = tracing::debug_span!("detect", tenant = %delivery.subject.tenant);
        delivery.follow(&span);
        let content = content_rx.borrow().clone();
        let evaluated = tracing::Instrument::instrument(
            evaluate(
                context,
                &content,
                &mut states,
                &progress,
                delivery,
                lateness,
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
    // Batches already evaluated are published and settled; the rest are redelivered.
    drop(evaluated_tx);
    let _ = publisher.await;
    tracing::debug!("detect consumer stopped");
    result
}

/// Decodes and evaluates one batch; `None` when it was settled here (undecodable, refused, or
/// its state could not be read).
async fn evaluate(
    context: &ServiceContext,
    content: &Arc<Content>,
    states: &mut HashMap<TenantId, TenantState>,
    progress: &SharedProgress,
    delivery: Delivery,
    lateness: i64,
) -> Option<Evaluated> {
    let tenant = delivery.subject.tenant.clone();
    let tenant_content = content.tenant(&tenant).cloned();
    let mut state = match states.remove(&tenant) {
        Some(mut state) => {
            state.follow(content, tenant_content.as_deref());
            state
        }
        None => TenantState::new(content, tenant_content.as_deref()),
    };
    let pending_saves = {
        let progress = lock(progress);
        if let Some(&failed) = progress.failed.get(&tenant)
            && failed >= state.epoch
        {
            state.epoch = failed + 1;
            state.synced = false;
        }
        progress.pending_saves.get(&tenant).copied().unwrap_or(0)
    };
    // Another process may have advanced this tenant's windows since: reread them (unless
    // this process's own saves are still under way, which would fail if it had).
    if state.correlates()
        && (pending_saves == 0 || !state.synced)
        && let Err(err) = sync_state(context, &tenant, &mut state, || {
            TenantState::new(content, tenant_content.as_deref())
        })
        .await
    {
        tracing::warn!(%tenant, error = %err, "cannot read correlation state, retrying");
        states.insert(tenant, state);
        let delay = retry_delay(&delivery);
        let _ = delivery.nak(Some(delay)).await;
        return None;
    }
    let content = Arc::clone(content);
    let batch_tenant = tenant.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let batch = match delivery.decode::<EventBatch>() {
            Ok(batch) => batch,
            Err(err) => return (state, delivery, Err(err.to_string())),
        };
        if let Err(reason) = batch.validate() {
            return (state, delivery, Err(reason));
        }
        let batch_id = batch.message_id();
        let now = time::OffsetDateTime::now_utc();
        let result = evaluate_batch(
            &content,
            &batch_tenant,
            &mut state,
            &batch.events,
            &batch_id,
            lateness,
            now,
        );
        metrics::counter!(metric_names::EVENTS).increment(batch.events.len() as u64);
        (state, delivery, Ok(result))
    })
    .await;
    let (mut state, delivery, result) = match evaluated {
        Ok(done) => done,
        Err(err) => {
            // The state went with the task: the next batch starts from the stored one.
            tracing::warn!(%tenant, error = %err, "evaluating a batch failed");
            return None;
        }
    };
    let result = match result {
        Ok(result) => result,
        Err(reason) => {
            // An undecodable batch, or one holding another tenant's event: it can never be
            // evaluated; it goes to the dead-letter subject with the reason.
            metrics::counter!(metric_names::BATCHES_REFUSED).increment(1);
            tracing::debug!(%tenant, %reason, "event batch refused");
            states.insert(tenant, state);
            let _ = delivery.dead_letter("detect", &reason).await;
            return None;
        }
    };
    metrics::counter!(metric_names::LATE).increment(result.late);
    metrics::counter!(metric_names::SUPPRESSED).increment(result.suppressed);
    let save = result.dirty.then(|| {
        let expected = state.stored_version;
        state.stored_version = Some(expected.map_or(1, |version| version + 1));
        *lock(progress)
            .pending_saves
            .entry(tenant.clone())
            .or_default() += 1;
        (expected, state.snapshot())
    });
    let epoch = state.epoch;
    states.insert(tenant.clone(), state);
    Some(Evaluated {
        delivery,
        tenant,
        epoch,
        alerts: result.alerts,
        save,
    })
}

/// A batch whose alerts were sent, waiting for the bus's acknowledgements.
struct Sent {
    item: Evaluated,
    acks: Result<Vec<vigil_bus::AckFuture>, ()>,
}

/// Sends each evaluated batch's alerts without waiting for the bus, so the alerts of several
/// batches are in flight at once; [`settle_stage`] waits for them in order.
async fn publish_stage(
    context: ServiceContext,
    mut evaluated_rx: tokio::sync::mpsc::Receiver<Evaluated>,
    progress: SharedProgress,
) {
    let (sent_tx, sent_rx) = tokio::sync::mpsc::channel::<Sent>(8);
    let settler = tokio::spawn(settle_stage(
        context.clone(),
        sent_rx,
        Arc::clone(&progress),
    ));
    while let Some(item) = evaluated_rx.recv().await {
        let acks = if is_stale(&progress, &item) {
            Err(())
        } else {
            send_alerts(&context, &item.tenant, &item.alerts).await
        };
        if sent_tx.send(Sent { item, acks }).await.is_err() {
            break;
        }
    }
    drop(sent_tx);
    let _ = settler.await;
}

/// Whether a batch was evaluated on a state that a failure since made wrong.
fn is_stale(progress: &SharedProgress, item: &Evaluated) -> bool {
    lock(progress)
        .failed
        .get(&item.tenant)
        .is_some_and(|&failed| failed >= item.epoch)
}

/// Waits for each batch's alerts to be acknowledged, saves its state, then acknowledges the
/// batch; on any failure the batch (and what was evaluated on top of it) is redelivered.
async fn settle_stage(
    context: ServiceContext,
    mut sent_rx: tokio::sync::mpsc::Receiver<Sent>,
    progress: SharedProgress,
) {
    while let Some(Sent { item, acks }) = sent_rx.recv().await {
        let mut outcome = match acks {
            Ok(acks) => await_acks(&item.tenant, acks).await,
            Err(()) => Err(()),
        };
        // A batch evaluated on top of one that failed since is redone, saved or not (its
        // watermark and correlation decisions came from the failed one).
        if outcome.is_ok() && is_stale(&progress, &item) {
            outcome = Err(());
        }
        if outcome.is_ok()
            && let Some(save) = &item.save
        {
            outcome = save_state(&context, &item.tenant, save).await;
        }
        let Evaluated {
            delivery,
            tenant,
            epoch,
            alerts,
            save,
        } = item;
        {
            let mut progress = lock(&progress);
            if save.is_some()
                && let Some(pending) = progress.pending_saves.get_mut(&tenant)
            {
                *pending = pending.saturating_sub(1);
            }
            if outcome.is_err() {
                let failed = progress.failed.entry(tenant).or_default();
                *failed = (*failed).max(epoch);
            }
        }
        let settled = match outcome {
            Ok(()) => {
                metrics::counter!(metric_names::ALERTS).increment(alerts.len() as u64);
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

async fn save_state(
    context: &ServiceContext,
    tenant: &TenantId,
    (expected, body): &(Option<i64>, Vec<u8>),
) -> Result<(), ()> {
    let now = vigil_store::micros(time::OffsetDateTime::now_utc());
    match context
        .store
        .tenant(tenant)
        .put_detect_state(STATE, *expected, body.clone(), now)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            // Another process saved first: redo the batch on its state. The alerts already
            // published come out with the same ids and are dropped downstream.
            metrics::counter!(metric_names::STATE_CONFLICTS).increment(1);
            Err(())
        }
        Err(err) => {
            tracing::warn!(%tenant, error = %err, "saving correlation state failed, retrying");
            Err(())
        }
    }
}

/// Rereads the stored correlation state when it is newer than the one in memory.
async fn sync_state(
    context: &ServiceContext,
    tenant: &TenantId,
    state: &mut TenantState,
    fresh: impl Fn() -> TenantState,
) -> Result<(), vigil_store::StoreError> {
    let scope = context.store.tenant(tenant);
    let stored = scope.detect_state_version(STATE).await?;
    if state.synced && stored == state.stored_version {
        return Ok(());
    }
    // Always from a fresh state: windows in memory may hold batches redelivered since.
    let epoch = state.epoch;
    *state = fresh();
    state.epoch = epoch;
    match scope.detect_state(STATE).await? {
        Some((version, body)) => {
            if let Err(reason) = state.restore(&body) {
                // An unreadable state (a correlation rule changed shape): start its windows
                // again rather than stop the tenant's detection.
                tracing::warn!(%tenant, %reason, "correlation state not restored, windows start again");
                *state = fresh();
                state.epoch = epoch;
            }
            state.stored_version = Some(version);
        }
        None => state.stored_version = None,
    }
    state.synced = true;
    Ok(())
}

/// Sends alerts; each returned future resolves when the bus holds its alert.
async fn send_alerts(
    context: &ServiceContext,
    tenant: &TenantId,
    alerts: &[Alert],
) -> Result<Vec<vigil_bus::AckFuture>, ()> {
    let mut pending = Vec::with_capacity(alerts.len());
    for alert in alerts {
        // The alert's subject is its tenant's; the batch's tenant made it.
        debug_assert_eq!(&alert.tenant, tenant);
        let sent = match OutgoingMessage::encode(alert, alert.id.to_string()) {
            Ok(message) => context.bus.publish(message).await,
            Err(err) => Err(err),
        };
        match sent {
            Ok(ack) => pending.push(ack),
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "publishing alerts failed, the batch will be redelivered");
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
