//! Faults the integration tests inject into a running daemon, read from the environment. They
//! exist only in a build with the `test-hooks` feature, which only the test command turns on
//! (`scripts/test.sh`: `--features halo/test-hooks`): every other build, the package's binary
//! among them, contains neither the code nor the variables' names, so a stray environment line in
//! a unit's drop-in or an upgrade child's inherited environment can never crash or stall a
//! production daemon.

/// An instance that starts: with `HALO_TEST_PANIC_INSTANCE` naming it, it panics, to prove that
/// a failing instance brings the daemon down loudly.
#[cfg(feature = "test-hooks")]
pub fn instance_started(name: &str) {
    if std::env::var_os("HALO_TEST_PANIC_INSTANCE").is_some_and(|wanted| wanted == name) {
        panic!("injected by HALO_TEST_PANIC_INSTANCE");
    }
}

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
pub fn instance_started(_name: &str) {}

/// A new process at `step` of a takeover (`offered`, `adopted`, `committed`, `released`), to prove that one
/// that crashes or is too slow there leaves the VIPs, the peers' view and the pid file as they
/// were: `HALO_TEST_UPGRADE_KILLED_AT=step` ends it with SIGKILL, as a crash would, without a
/// word; `HALO_TEST_UPGRADE_STALLED_AT=step` makes it wait `stall` (longer than the running
/// daemon waits for a step).
#[cfg(feature = "test-hooks")]
pub async fn upgrade_step(step: &str, stall: std::time::Duration) {
    if std::env::var_os("HALO_TEST_UPGRADE_STALLED_AT").is_some_and(|at| at == step) {
        tokio::time::sleep(stall).await;
    }
    if std::env::var_os("HALO_TEST_UPGRADE_KILLED_AT").is_some_and(|at| at == step)
        && let Err(e) = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL)
    {
        tracing::error!(error = %e, "HALO_TEST_UPGRADE_KILLED_AT: could not kill this process");
    }
}

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
pub async fn upgrade_step(_step: &str, _stall: std::time::Duration) {}

/// Holding `address` (adding or refreshing it): while the file `HALO_TEST_VIP_REFRESH_FAILS`
/// names exists, it fails as a refusal of the kernel would, to prove that a master that cannot
/// hold its addresses gives them up.
#[cfg(feature = "test-hooks")]
pub fn refresh_may_fail(address: std::net::IpAddr) -> halo_hostnet::Result<()> {
    match std::env::var_os("HALO_TEST_VIP_REFRESH_FAILS") {
        Some(path) if std::path::Path::new(&path).exists() => Err(halo_hostnet::HostError::Io {
            what: format!("adding {address} (HALO_TEST_VIP_REFRESH_FAILS)"),
            source: std::io::Error::from_raw_os_error(nix::errno::Errno::EPERM as i32),
        }),
        _ => Ok(()),
    }
}

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
pub fn refresh_may_fail(_address: std::net::IpAddr) -> halo_hostnet::Result<()> {
    Ok(())
}

/// The status endpoint's unix socket has just been bound at its path: with
/// `HALO_TEST_STALL_AFTER_STATUS_BIND` set, the daemon waits two seconds here, to prove that the
/// socket is never there with a mode that lets others in.
#[cfg(feature = "test-hooks")]
pub fn status_socket_bound() {
    if std::env::var_os("HALO_TEST_STALL_AFTER_STATUS_BIND").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
pub fn status_socket_bound() {}
