//! A `Remote` wrapper that makes chosen operations fail: the next N calls
//! of a kind, or a share of them picked by a seeded generator so a failing
//! run can be replayed. Everything else passes through to the wrapped
//! remote, which keeps counting what reaches it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::layer::{Call, RemoteLayer};
use super::{Remote, RemoteError, RemoteResult};

/// The kinds of operations failures are injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    List,
    Stat,
    CreateFolder,
    RemoveFolder,
    RemoveFile,
    /// `rename_file` and `rename_folder`.
    Rename,
    /// `move_file` and `move_folder`.
    Move,
    Upload,
    DirectLink,
    Download,
    About,
}

/// Failures planned for one kind of operation.
struct Plan {
    /// Errors for the next calls, in order.
    next: VecDeque<RemoteError>,
    /// Fails each later call with this probability, with this error.
    rate: Option<(f64, StdRng, RemoteError)>,
    calls: u64,
    injected: u64,
}

/// Wraps a remote and fails its operations as planned.
pub struct FailingRemote {
    inner: Arc<dyn Remote>,
    plans: Mutex<HashMap<Operation, Plan>>,
}

impl FailingRemote {
    pub fn new(inner: Arc<dyn Remote>) -> Self {
        FailingRemote {
            inner,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The next `count` calls of `operation` fail with `error`.
    pub fn fail_next(&self, operation: Operation, count: usize, error: RemoteError) {
        self.fail_with(operation, std::iter::repeat_n(error, count));
    }

    /// The next calls of `operation` fail with these errors, one each.
    pub fn fail_with(&self, operation: Operation, errors: impl IntoIterator<Item = RemoteError>) {
        self.plan(operation, |plan| plan.next.extend(errors));
    }

    /// From now on each call of `operation` fails with probability `rate`
    /// (0 to 1), drawn from a generator seeded with `seed`.
    pub fn fail_at_rate(&self, operation: Operation, rate: f64, seed: u64, error: RemoteError) {
        let rate = rate.clamp(0.0, 1.0);
        self.plan(operation, |plan| {
            plan.rate = Some((rate, StdRng::seed_from_u64(seed), error))
        });
    }

    /// Cancels every failure planned for `operation`.
    pub fn heal(&self, operation: Operation) {
        self.plan(operation, |plan| {
            plan.next.clear();
            plan.rate = None;
        });
    }

    /// Calls of `operation` seen, failed or not.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.plans.lock().get(&operation).map_or(0, |p| p.calls)
    }

    /// Calls of `operation` failed on purpose.
    pub fn injected(&self, operation: Operation) -> u64 {
        self.plans.lock().get(&operation).map_or(0, |p| p.injected)
    }

    fn plan(&self, operation: Operation, change: impl FnOnce(&mut Plan)) {
        change(self.plans.lock().entry(operation).or_insert_with(Plan::new));
    }

    /// Counts the call and answers the planned failure, if any.
    fn enter(&self, operation: Operation) -> RemoteResult<()> {
        let mut plans = self.plans.lock();
        let plan = plans.entry(operation).or_insert_with(Plan::new);
        plan.calls += 1;
        let error = plan.next.pop_front().or_else(|| {
            let (rate, rng, error) = plan.rate.as_mut()?;
            (rng.gen::<f64>() < *rate).then(|| error.clone())
        });
        match error {
            Some(error) => {
                plan.injected += 1;
                Err(error)
            }
            None => Ok(()),
        }
    }
}

impl Plan {
    fn new() -> Self {
        Plan {
            next: VecDeque::new(),
            rate: None,
            calls: 0,
            injected: 0,
        }
    }
}

impl RemoteLayer for FailingRemote {
    type Ticket = ();

    fn inner(&self) -> &dyn Remote {
        &*self.inner
    }

    fn before(&self, call: &Call<'_>) -> RemoteResult<()> {
        self.enter(operation_of(call))
    }
}

/// The kind of operation a call is, as failures are planned.
fn operation_of(call: &Call<'_>) -> Operation {
    match call {
        Call::List { .. } => Operation::List,
        Call::Stat { .. } => Operation::Stat,
        Call::CreateFolder { .. } => Operation::CreateFolder,
        Call::RemoveFolder { .. } => Operation::RemoveFolder,
        Call::RemoveFile { .. } => Operation::RemoveFile,
        Call::RenameFile { .. } | Call::RenameFolder { .. } => Operation::Rename,
        Call::MoveFile { .. } | Call::MoveFolder { .. } => Operation::Move,
        Call::Upload { .. } => Operation::Upload,
        Call::DirectLink { .. } => Operation::DirectLink,
        Call::Download { .. } => Operation::Download,
        Call::About => Operation::About,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;
    use crate::remote::UploadSource;

    fn setup() -> (Arc<MemoryRemote>, FailingRemote) {
        let memory = Arc::new(MemoryRemote::new());
        let failing = FailingRemote::new(memory.clone());
        (memory, failing)
    }

    fn upload_bytes(data: &[u8]) -> UploadSource {
        UploadSource::Reader {
            reader: Box::pin(std::io::Cursor::new(data.to_vec())),
            size: data.len() as u64,
        }
    }

    #[tokio::test]
    async fn the_next_n_calls_of_one_kind_fail_and_others_pass() {
        let (memory, failing) = setup();
        let root = failing.root();
        failing.fail_next(Operation::Upload, 2, RemoteError::Transient("503".into()));
        for _ in 0..2 {
            assert!(matches!(
                failing.upload(&root, "a", upload_bytes(b"x"), None).await,
                Err(RemoteError::Transient(_))
            ));
        }
        // Listing is unaffected, and the failed uploads never reached the remote.
        assert!(failing.list_folder(&root).await.unwrap().files.is_empty());
        assert_eq!(memory.upload_requests(), 0);
        let file = failing
            .upload(&root, "a", upload_bytes(b"x"), None)
            .await
            .unwrap();
        assert_eq!(memory.content(&file.id).unwrap().as_ref(), b"x");
        assert_eq!(
            (
                failing.calls(Operation::Upload),
                failing.injected(Operation::Upload)
            ),
            (3, 2)
        );
        failing.fail_with(
            Operation::List,
            [RemoteError::RateLimited {
                wait: None,
                message: "slow down".into(),
            }],
        );
        assert!(matches!(
            failing.list_folder(&root).await,
            Err(RemoteError::RateLimited { .. })
        ));
        assert_eq!(failing.list_folder(&root).await.unwrap().files.len(), 1);
    }

    #[tokio::test]
    async fn rate_failures_are_replayable_from_their_seed() {
        async fn pattern(seed: u64) -> Vec<bool> {
            let (memory, failing) = setup();
            let file = memory.add_file("f", vec![7; 100]);
            failing.fail_at_rate(
                Operation::Download,
                0.5,
                seed,
                RemoteError::Transient("reset".into()),
            );
            let mut outcome = Vec::new();
            for _ in 0..64 {
                outcome.push(failing.download_range(&file.id, 0, 10).await.is_ok());
            }
            outcome
        }
        let first = pattern(42).await;
        assert_eq!(first, pattern(42).await);
        assert_ne!(first, pattern(43).await);
        let successes = first.iter().filter(|ok| **ok).count();
        assert!((16..=48).contains(&successes), "{successes} of 64");

        let (memory, failing) = setup();
        let file = memory.add_file("f", vec![7; 100]);
        failing.fail_at_rate(Operation::Download, 1.0, 1, RemoteError::Fatal("x".into()));
        assert!(failing.download_range(&file.id, 0, 10).await.is_err());
        failing.heal(Operation::Download);
        assert!(failing.download_range(&file.id, 0, 10).await.is_ok());
        assert_eq!(memory.download_requests(), 1);
    }
}
