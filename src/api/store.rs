//! The only way the API reaches the keystore: every call runs on the executor's blocking
//! thread pool, so file I/O and network round trips never stall a core. Results come back
//! as the spec's `(status, message)` errors.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use super::{ApiError, Core};
use crate::crypto::KeyRing;
use crate::keystore::StoreError;
use crate::secret::SecretVec;

/// How long the same keystore failure is not logged again.
pub const ERROR_REPEAT_QUIET: Duration = Duration::from_secs(10);

/// The error log's record of why keystore calls fail: the API answers only `502 failed to
/// … key`, so the operator learns the cause (an unreachable service, refused credentials, a
/// metadata server that is not there) here. Keystore error texts never carry secrets. The
/// same text is logged at most once per [`ERROR_REPEAT_QUIET`], so an outage does not flood
/// the log.
#[derive(Default)]
pub struct ErrorReports {
    last: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl ErrorReports {
    /// Logs `keystore: <what>: <err>` unless the same line went out less than
    /// [`ERROR_REPEAT_QUIET`] ago. "Not found" and "already exists" are answers, not failures.
    pub fn report(&self, logs: &crate::log::Logs, what: &str, err: &StoreError) {
        if matches!(err, StoreError::NotFound | StoreError::AlreadyExists) {
            return;
        }
        let line = format!("keystore: {what}: {err}");
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((text, at)) = last.as_ref() {
                if *text == line && at.elapsed() < ERROR_REPEAT_QUIET {
                    return;
                }
            }
            *last = Some((line.clone(), std::time::Instant::now()));
        }
        logs.error(crate::log::Level::ERROR, &line, None);
    }
}

/// Why a keystore call made through [`blocking`] has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailed {
    /// The core's blocking-pool queue is full: answered [`ApiError::STORE_BUSY`].
    Busy,
    /// The call panicked (the core lives on).
    Panicked,
}

/// Runs `f` on the current core's blocking pool. A panic inside `f` becomes
/// [`CallFailed::Panicked`] instead of tearing down the core; a full queue is
/// [`CallFailed::Busy`] at once. Dropping the future before a pool thread took `f` means
/// `f` is never run.
pub async fn blocking<F, R>(f: F) -> Result<R, CallFailed>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match crate::rt::spawn_blocking(move || catch_unwind(AssertUnwindSafe(f)).ok()) {
        Ok(task) => task.await.ok_or(CallFailed::Panicked),
        Err(crate::rt::blocking::PoolFull) => Err(CallFailed::Busy),
    }
}

/// The error of a call that has no result: `busy` for a full queue, `failed` otherwise.
fn no_result(e: CallFailed, failed: ApiError) -> ApiError {
    match e {
        CallFailed::Busy => ApiError::STORE_BUSY,
        CallFailed::Panicked => failed,
    }
}

/// The key named `name`, from this core's shard or, on a miss, from the keystore. `wait`
/// bounds how long a miss waits for another request's read of the same key (the route's
/// timeout; zero: no bound).
pub async fn key(core: &Core, name: &str, wait: Duration) -> Result<Rc<KeyRing>, ApiError> {
    let shared = &core.shared;
    if let Some(key) = core.cache.borrow_mut().get(&shared.invalidations, name) {
        core.metrics.inc(&core.metrics.cache_hits);
        return Ok(key);
    }
    core.metrics.inc(&core.metrics.cache_misses);
    fetch(core, name, wait, false).await
}

/// The key named `name`, holding version `version` if the keystore has it: a version newer
/// than this core's copy (another node added it) reloads the key, as [`reload`] allows.
/// The caller still checks that the version is there.
pub async fn key_with_version(
    core: &Core,
    name: &str,
    version: u32,
    wait: Duration,
) -> Result<Rc<KeyRing>, ApiError> {
    let ring = key(core, name, wait).await?;
    if version < ring.next_number() {
        return Ok(ring);
    }
    match reload(core, name, wait).await {
        Some(fresh) => fresh,
        None => Ok(ring),
    }
}

/// The least time between two reloads of one key on one core: bounds the keystore reads a
/// caller can cause with made-up version numbers to one per key, core and this period.
pub const RELOAD_AFTER: Duration = Duration::from_secs(1);

/// The key named `name` read again from the keystore for a version this core's copy lacks
/// (another node added it), unless this core reloaded it less than [`RELOAD_AFTER`] ago
/// (`None`).
pub async fn reload(
    core: &Core,
    name: &str,
    wait: Duration,
) -> Option<Result<Rc<KeyRing>, ApiError>> {
    let ago = core
        .cache
        .borrow()
        .reloaded_ago(name, std::time::Instant::now());
    if ago.is_some_and(|ago| ago < RELOAD_AFTER) {
        return None;
    }
    Some(fetch(core, name, wait, true).await)
}

/// Reads `name` from the keystore and caches it on this core (`reloaded`: for a version the
/// cached copy lacked).
async fn fetch(
    core: &Core,
    name: &str,
    wait: Duration,
    reloaded: bool,
) -> Result<Rc<KeyRing>, ApiError> {
    let shared = &core.shared;
    let epoch = shared.invalidations.epoch();
    let shared_arc = core.shared.clone();
    let owned = name.to_string();
    let fetch_started = std::time::Instant::now();
    let fetched = blocking(move || {
        let store = &shared_arc.keystore;
        shared_arc.flights.get(&owned, wait, || store.get(&owned))
    })
    .await;
    core.metrics
        .keystore_call(fetch_started.elapsed().as_nanos() as u64);
    let value: SecretVec = match fetched {
        Ok(Ok(v)) => v,
        Ok(Err(StoreError::NotFound)) => return Err(ApiError::KEY_NOT_FOUND),
        Ok(Err(e)) => {
            shared.store_errors.report(&shared.logs, "read key", &e);
            return Err(ApiError::STORE_READ);
        }
        Err(e) => return Err(no_result(e, ApiError::STORE_READ)),
    };
    let key = Rc::new(KeyRing::decode(value.expose()).map_err(|_| ApiError::STORE_READ)?);
    core.cache
        .borrow_mut()
        .insert(&shared.invalidations, epoch, name, key.clone(), reloaded);
    Ok(key)
}

/// What [`update`]'s change does with the key's ring.
pub enum Update {
    /// Store the changed ring in place of the one read.
    Replace,
    /// Delete the whole key (its last version was removed).
    DeleteKey,
}

/// How often [`update`] reads the ring again when another writer changed it first.
pub const UPDATE_ATTEMPTS_MAX: usize = 8;

/// Changes the stored ring of `name` with `change` (run on the blocking pool, once per
/// attempt, on the ring as stored) and writes it back with the keystore's compare-and-set:
/// when another node changed the key in between, it reads again and retries, up to
/// [`UPDATE_ATTEMPTS_MAX`] times. Afterwards every core of this node reads the key afresh.
pub async fn update<T, F>(core: &Core, name: &str, mut change: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnMut(&mut KeyRing) -> Result<(Update, T), ApiError> + Send + 'static,
{
    let shared = core.shared.clone();
    let owned = name.to_string();
    let report = move |shared: &super::Shared, e: &StoreError| {
        shared.store_errors.report(&shared.logs, "update key", e);
    };
    let result = blocking(move || {
        let store = &shared.keystore;
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let old = match store.get(&owned) {
                Ok(v) => v,
                Err(StoreError::NotFound) => return Err(ApiError::KEY_NOT_FOUND),
                Err(e) => {
                    report(&shared, &e);
                    return Err(ApiError::STORE_READ);
                }
            };
            let mut ring = KeyRing::decode(old.expose()).map_err(|_| ApiError::STORE_READ)?;
            let (what, value) = change(&mut ring)?;
            let written = match what {
                Update::Replace => store.replace(&owned, old.expose(), ring.encode().expose()),
                Update::DeleteKey => store.delete(&owned),
            };
            match written {
                Ok(()) => return Ok(value),
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(ApiError::KEY_NOT_FOUND),
                Err(StoreError::Unsupported(_)) => return Err(ApiError::ROTATE_UNSUPPORTED),
                Err(e) => {
                    report(&shared, &e);
                    return Err(ApiError::STORE_UPDATE);
                }
            }
        }
        Err(ApiError::KEY_CHANGED)
    })
    .await;
    // Whatever happened, this node's copies of the key may be out of date now.
    core.shared.invalidations.publish(name);
    core.cache.borrow_mut().remove(name);
    match result {
        Ok(r) => r,
        Err(e) => Err(no_result(e, ApiError::STORE_UPDATE)),
    }
}

/// Stores a new record with create-if-absent semantics.
pub async fn create(core: &Core, name: &str, record: SecretVec) -> Result<(), ApiError> {
    let store = core.shared.keystore.clone();
    let owned = name.to_string();
    match blocking(move || store.create(&owned, record.expose())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(StoreError::AlreadyExists)) => Err(ApiError::KEY_EXISTS),
        Ok(Err(e)) => {
            let shared = &core.shared;
            shared.store_errors.report(&shared.logs, "create key", &e);
            Err(ApiError::STORE_CREATE)
        }
        Err(e) => Err(no_result(e, ApiError::STORE_CREATE)),
    }
}

/// Deletes `name` from the keystore, then evicts it on every core of this node.
pub async fn delete(core: &Core, name: &str) -> Result<(), ApiError> {
    let store = core.shared.keystore.clone();
    let owned = name.to_string();
    match blocking(move || store.delete(&owned)).await {
        Ok(Ok(())) => {}
        Ok(Err(StoreError::NotFound)) => return Err(ApiError::KEY_NOT_FOUND),
        Ok(Err(e)) => {
            let shared = &core.shared;
            shared.store_errors.report(&shared.logs, "delete key", &e);
            return Err(ApiError::STORE_DELETE);
        }
        Err(e) => return Err(no_result(e, ApiError::STORE_DELETE)),
    }
    core.shared.invalidations.publish(name);
    core.cache.borrow_mut().remove(name);
    Ok(())
}

/// All key names starting with `prefix`, sorted.
pub async fn list(core: &Core, prefix: &str) -> Result<Vec<String>, ApiError> {
    let store = core.shared.keystore.clone();
    let owned = prefix.to_string();
    match blocking(move || store.list(&owned)).await {
        Ok(Ok(names)) => Ok(names),
        Ok(Err(e)) => {
            let shared = &core.shared;
            shared.store_errors.report(&shared.logs, "list keys", &e);
            Err(ApiError::STORE_LIST)
        }
        Err(e) => Err(no_result(e, ApiError::STORE_LIST)),
    }
}

/// Keystore health: its probe latency, or whether it is unreachable (`true`) or failing.
pub async fn status(core: &Core) -> Result<Duration, bool> {
    // A probe younger than this is reused (per core): `/v1/status` and `/v1/ready` are polled
    // by load balancers and dashboards, and each probe is a trip through the blocking pool.
    const PROBE_REUSE: Duration = Duration::from_secs(1);
    // While the health check says the keystore is down, answer at once without probing.
    if core
        .shared
        .keystore_offline
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(true);
    }
    if let Some((at, result)) = core.last_probe.get() {
        if at.elapsed() < PROBE_REUSE {
            return result;
        }
    }
    let store = core.shared.keystore.clone();
    let result = match blocking(move || store.status()).await {
        Ok(Ok(latency)) => Ok(latency),
        Ok(Err(StoreError::Unreachable(_))) => Err(true),
        // A full queue says nothing of the keystore: answered, not kept as the probe.
        Err(CallFailed::Busy) => return Err(false),
        Ok(Err(_)) | Err(CallFailed::Panicked) => Err(false),
    };
    core.last_probe
        .set(Some((std::time::Instant::now(), result)));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_failures_are_logged_without_repeats() {
        let logs = crate::log::Logs::new(crate::log::Level::INFO, crate::log::Level::INFO);
        let sub = logs.subscribe_error();
        let reports = ErrorReports::default();
        let down = StoreError::Unreachable("Vault at 127.0.0.1:1: connection refused".into());
        reports.report(&logs, "read key", &down);
        reports.report(&logs, "read key", &down);
        reports.report(&logs, "read key", &StoreError::NotFound);
        reports.report(&logs, "read key", &StoreError::AlreadyExists);
        reports.report(&logs, "create key", &down);
        let mut lines = Vec::new();
        sub.drain(&mut lines).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("level=ERROR msg=\\\"keystore: read key: keystore is unreachable: Vault at 127.0.0.1:1: connection refused\\\""),
            "{lines:?}"
        );
        assert!(lines[1].contains("keystore: create key:"), "{lines:?}");
    }
}
