//! Running the commands halo is configured with (tracker scripts and notify hooks): without a
//! shell, with a timeout after which the command is killed, outcome as a word for logs.

use std::time::Duration;

/// Runs a command without a shell; a run past `timeout` is killed and fails.
pub async fn run_script(argv: &[String], timeout: Duration) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else { return (false, "empty command".to_string()) };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot run {program}: {e}")),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => (true, "exit 0".to_string()),
        Ok(Ok(status)) => (false, format!("{status}")),
        Ok(Err(e)) => (false, format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Err(e) = child.kill().await {
                tracing::warn!(program, error = %e, "could not kill a timed-out command");
            }
            (false, format!("timeout after {}", humantime::format_duration(timeout)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripts_pass_fail_and_time_out() {
        assert!(run_script(&["/bin/true".into()], Duration::from_secs(5)).await.0);
        let (ok, why) = run_script(&["/bin/false".into()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("exit status: 1"), "{why}");
        let started = std::time::Instant::now();
        let (ok, why) = run_script(&["/bin/sleep".into(), "10".into()], Duration::from_millis(200)).await;
        assert!(!ok && why.starts_with("timeout after 200ms"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(5), "the command was killed");
        let (ok, why) = run_script(&["/nonexistent".into()], Duration::from_secs(1)).await;
        assert!(!ok && why.starts_with("cannot run /nonexistent"), "{why}");
    }
}
