//! The VRRP side's own thread: a current-thread tokio runtime on a thread named `halo-vrrp`,
//! apart from the balancer's multi-thread runtime. Every instance's driver, the sync groups,
//! the VIP refresh, the netlink connections they use, the link watcher, the trackers and the BGP
//! announcements run on it, so that a flood of connections or a saturated data path cannot
//! delay an advert or a lifetime refresh. The run loop stays on the balancer's runtime and
//! reaches these tasks through channels and join handles, which work across runtimes.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use halo_hostnet::netlink::{LinkStates, Netlink};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The thread's name, as `/proc/PID/task/*/comm` and the log show it.
pub const THREAD_NAME: &str = "halo-vrrp";

/// How long a stopping runtime waits for blocking work still running (a script's preparation).
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(1);

/// How long `stop` waits for the thread to have shut its runtime down.
const STOPPED_WITHIN: Duration = Duration::from_secs(3);

/// The VRRP side's runtime, running on its own thread until stopped (or dropped).
pub(crate) struct VrrpRuntime {
    handle: Handle,
    /// Ends the thread's `block_on`; `None` once sent.
    stop: Option<oneshot::Sender<()>>,
    /// Said by the thread once its runtime has shut down.
    stopped: oneshot::Receiver<()>,
}

impl VrrpRuntime {
    /// Starts the thread and its runtime (built there: a runtime must not be dropped on a thread
    /// of another one, and a failed start drops it).
    pub async fn start() -> anyhow::Result<Self> {
        let (ready, handle) = oneshot::channel();
        let (stop, stop_received) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || serve(ready, stop_received, stopped_tx))
            .context("starting the VRRP thread")?;
        let handle = handle.await.context("the VRRP thread ended before its runtime ran")?.context("starting the VRRP runtime")?;
        Ok(Self { handle, stop: Some(stop), stopped })
    }

    /// Where the VRRP side's tasks are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the VRRP thread and waits for it: what it spawns on the current runtime
    /// (a netlink connection's I/O, a link watcher) lives there.
    pub async fn run_there<F>(&self, future: F) -> anyhow::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future).await.context("a task on the VRRP thread failed")
    }

    /// The netlink connection the instances and announcements share, and the link watcher,
    /// both served by the VRRP thread.
    pub async fn open_netlink(&self) -> anyhow::Result<(Netlink, LinkStates)> {
        let opened =
            self.run_there(async { Ok::<_, halo_hostnet::HostError>((Netlink::open()?, halo_hostnet::netlink::watch_links().await?)) });
        Ok(opened.await??)
    }

    /// Stops the runtime once everything on it has been stopped (the instances, the
    /// announcements, their last netlink requests); what is left is dropped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOPPED_WITHIN, &mut self.stopped).await.is_err() {
            tracing::warn!(waited = ?STOPPED_WITHIN, "the VRRP thread did not stop in time");
        }
    }
}

impl Drop for VrrpRuntime {
    /// A daemon that ends on an error: the thread stops by itself, nobody waits for it.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The thread's body: builds the runtime, hands its handle over, runs until told to stop.
fn serve(ready: oneshot::Sender<std::io::Result<Handle>>, stop: oneshot::Receiver<()>, stopped: oneshot::Sender<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(runtime.handle().clone())).is_err() {
        return;
    }
    // A dropped sender (the daemon ended without `stop`) ends the wait as well.
    let _ = runtime.block_on(stop);
    runtime.shutdown_timeout(SHUTDOWN_WITHIN);
    let _ = stopped.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_run_on_the_named_thread_and_stop_with_it() {
        let vrrp = VrrpRuntime::start().await.expect("runtime");
        let name = vrrp.run_there(async { std::thread::current().name().map(str::to_string) }).await.expect("ran");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        let (tx, rx) = oneshot::channel::<()>();
        let waiting = vrrp.handle().spawn(async move { rx.await.is_ok() });
        tx.send(()).expect("send across runtimes");
        assert!(waiting.await.expect("joined across runtimes"));
        let forever = vrrp.handle().spawn(std::future::pending::<()>());
        vrrp.stop().await;
        assert!(forever.await.expect_err("dropped with the runtime").is_cancelled());
    }
}
