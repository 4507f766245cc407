//! The end of a mount: handles the kernel left open are released and the
//! write-back queue (then the metadata sync) gets a bounded wait to finish
//! its uploads.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::state::FsState;

/// A line for the user on stderr at unmount. Stderr may be a closed pipe
/// (`filehostfs mount ... | tee log`, `tee` stopped first): the line is
/// then dropped, where `eprintln!` would panic in the middle of the stop.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// At unmount: waits (bounded) for the queue and says what is left.
/// `stop` ends the wait early (a second Ctrl-C): what is pending then stays
/// journaled, as after a timeout.
/// With `--metadata-sync`, the folders whose records changed get their sync
/// files written after the uploads (which change records too), within the
/// same bound.
pub(crate) async fn finish_uploads(state: &FsState, stop: impl std::future::Future<Output = ()>) {
    use futures::future::{FusedFuture as _, FutureExt as _};
    let stop = stop.fuse();
    futures::pin_mut!(stop);
    let write = &state.write;
    // The kernel sends nothing more: handles it did not release (the
    // session ended first) are released here, so their files get queued.
    for handle in state.handles.drain_writers() {
        if let Some(staged) = handle.staged.lock().take() {
            if let Err(error) = staged.release() {
                warn!(entry = %handle.entry, %error, "releasing a file at unmount failed");
            }
        }
    }
    state.handles.close_remote_readers();
    let outstanding = write.queue.outstanding();
    if outstanding > 0 {
        tell!(
            "filehostfs: waiting up to {}s for {outstanding} pending upload(s)...",
            write.unmount_wait.as_secs()
        );
    }
    let report = tokio::select! {
        report = write.queue.drain(write.unmount_wait) => report,
        () = &mut stop => {
            tell!("filehostfs: stop requested; not waiting for the uploads");
            write.queue.drain(Duration::ZERO).await
        }
    };
    if !stop.is_terminated() {
        let deadline = tokio::time::Instant::now() + write.unmount_wait;
        tokio::select! {
            () = super::metadata_sync::write_all(state, deadline) => {}
            () = &mut stop => tell!("filehostfs: stop requested; metadata changes not shared yet stay in this machine's store"),
        }
    }
    if write.queue.pending().is_empty() && report.left.is_empty() {
        // Nothing journaled (not even a placeholder): leave no trace.
        let dir = write.queue.staging_dir();
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            debug!(dir = %dir.display(), %error, "cannot remove the empty staging dir");
        }
        if write.default_dir {
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    if report.left.is_empty() {
        if outstanding > 0 {
            tell!("filehostfs: all uploads complete");
        }
        info!("write-back queue drained");
        return;
    }
    tell!(
        "filehostfs: {} upload(s) left journaled in {}; the next mount with this cache dir completes them:",
        report.left.len(),
        write.queue.staging_dir().display()
    );
    for pending in &report.left {
        let reason = pending
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        tell!("  {} ({} bytes){reason}", pending.name, pending.size);
    }
}
