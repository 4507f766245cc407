//! The signals a mount listens to for its whole life: every SIGINT and
//! SIGTERM is a stop request (the first unmounts, later ones stop waiting
//! for whatever the stop is waiting for), SIGHUP drops the listing caches
//! (rclone's convention).
//!
//! The handlers are installed once, before the mount serves anything, and
//! stay installed until the process ends: a signal never finds the process
//! with its default action restored or with nobody listening.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many stop requests (SIGINT, SIGTERM) have arrived so far.
#[derive(Clone)]
pub struct StopRequests {
    count: watch::Receiver<u64>,
}

impl StopRequests {
    /// Stop requests received so far.
    pub fn count(&self) -> u64 {
        *self.count.borrow()
    }

    /// Resolves once more than `seen` stop requests have arrived (never,
    /// once the listener is gone).
    pub async fn more_than(mut self, seen: u64) {
        if self.count.wait_for(|count| *count > seen).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The running listener; dropping it stops listening (the handlers stay
/// installed, so a late signal is ignored rather than killing the process
/// half-way through its stop).
pub struct SignalListener {
    task: JoinHandle<()>,
    pub requests: StopRequests,
}

impl Drop for SignalListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the handlers and spawns the listener on the current runtime.
/// `on_stop` gets the number of the request (1 for the first); `on_hangup`
/// runs on every SIGHUP. Both run on the runtime and must not block.
pub fn listen(
    mut on_stop: impl FnMut(u64) + Send + 'static,
    mut on_hangup: impl FnMut() + Send + 'static,
) -> std::io::Result<SignalListener> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let (sender, receiver) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        loop {
            match next_signal(&mut interrupt, &mut terminate, &mut hangup).await {
                Some(Received::Stop) => {
                    sender.send_modify(|count| *count += 1);
                    let count = *sender.borrow();
                    on_stop(count);
                }
                Some(Received::Hangup) => on_hangup(),
                None => break,
            }
        }
    });
    Ok(SignalListener {
        task,
        requests: StopRequests { count: receiver },
    })
}

/// What a received signal asks for.
enum Received {
    Stop,
    Hangup,
}

async fn next_signal(
    interrupt: &mut Signal,
    terminate: &mut Signal,
    hangup: &mut Signal,
) -> Option<Received> {
    tokio::select! {
        Some(()) = interrupt.recv() => Some(Received::Stop),
        Some(()) = terminate.recv() => Some(Received::Stop),
        Some(()) = hangup.recv() => Some(Received::Hangup),
        else => None,
    }
}
