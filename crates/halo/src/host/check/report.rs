//! The report of `halo host check`: one line per check ([`Finding`]), gathered in a [`Report`]
//! and printed as text or JSON.

use serde::Serialize;

use crate::cli::Role;
use crate::host::verdict::Verdict;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked.
    pub check: String,
    /// The verdict.
    pub status: Verdict,
    /// What was found.
    pub found: String,
    /// What to do (empty when OK).
    pub fix: String,
}

/// The findings, in the order the checks ran.
#[derive(Default)]
pub(super) struct Report(Vec<Finding>);

impl Report {
    /// Adds a finding.
    pub(super) fn add(&mut self, check: impl Into<String>, status: Verdict, found: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Finding { check: check.into(), status, found: found.into(), fix: fix.into() });
    }

    /// Adds a finding that is as it should be.
    pub(super) fn ok(&mut self, check: impl Into<String>, found: impl Into<String>) {
        self.add(check, Verdict::Ok, found, "");
    }

    /// Whether any check failed.
    pub(super) fn failed(&self) -> bool {
        self.0.iter().any(|f| f.status == Verdict::Fail)
    }

    /// Prints the report: as JSON, or one line per check (and its fix) and the counts for `role`.
    pub(super) fn print(&self, json: bool, role: Role) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self.0)?);
            return Ok(());
        }
        for f in &self.0 {
            let status = match f.status {
                Verdict::Ok => "OK",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            println!("{status:<4}  {}: {}", f.check, f.found);
            if !f.fix.is_empty() {
                println!("      -> {}", f.fix);
            }
        }
        let count = |v: Verdict| self.0.iter().filter(|f| f.status == v).count();
        println!("{} OK, {} WARN, {} FAIL (role {})", count(Verdict::Ok), count(Verdict::Warn), count(Verdict::Fail), role.name());
        Ok(())
    }
}

/// The one finding a check made, as (check, verdict, found, fix).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) fn only(report: Report) -> (String, Verdict, String, String) {
    let [f] = <[Finding; 1]>::try_from(report.0).unwrap();
    (f.check, f.status, f.found, f.fix)
}
