//! The status endpoint's `/metrics`: everything it knows as Prometheus text, one table row per
//! metric.

use crate::daemon::snapshot::{FrontendJson, ServerJson, StatusJson, snapshot};
use crate::daemon::state::{InstanceStatus, Shared};

/// Prometheus label value escaping.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One gauge or counter with a row per instance, frontend or server: how its value is read.
struct Metric<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> f64,
}

const INSTANCE_METRICS: &[Metric<InstanceStatus>] = &[
    Metric { name: "halo_vrrp_priority", kind: "gauge", help: "Effective VRRP priority.", value: |i| f64::from(i.priority) },
    Metric { name: "halo_vrrp_adverts_sent_total", kind: "counter", help: "VRRP adverts sent.", value: |i| i.adverts_sent as f64 },
    Metric {
        name: "halo_vrrp_adverts_received_total",
        kind: "counter",
        help: "VRRP adverts received for the instance.",
        value: |i| i.adverts_received as f64,
    },
    Metric {
        name: "halo_vrrp_address_mismatch_total",
        kind: "counter",
        help: "Accepted adverts whose address list differs from the instance's.",
        value: |i| i.address_mismatch as f64,
    },
    Metric {
        name: "halo_vrrp_vip_refresh_failures_total",
        kind: "counter",
        help: "Additions and refreshes of virtual addresses the kernel refused.",
        value: |i| i.vip_refresh_failures as f64,
    },
    Metric { name: "halo_vrrp_hook_failures_total", kind: "counter", help: "Notify hooks that failed.", value: |i| i.hook_failures as f64 },
];

const FRONTEND_METRICS: &[Metric<FrontendJson>] = &[
    Metric {
        name: "halo_frontend_listening",
        kind: "gauge",
        help: "1 while the frontend accepts connections.",
        value: |f| f64::from(u8::from(f.listening)),
    },
    Metric { name: "halo_frontend_connections", kind: "gauge", help: "Connections open now.", value: |f| f.connections as f64 },
    Metric { name: "halo_frontend_connections_total", kind: "counter", help: "Connections accepted.", value: |f| f.total as f64 },
    Metric {
        name: "halo_frontend_queue_drops_total",
        kind: "counter",
        help: "Connections closed after waiting for a slot.",
        value: |f| f.queue_drops as f64,
    },
    Metric {
        name: "halo_frontend_first_byte_timeouts_total",
        kind: "counter",
        help: "Connections closed unserved: nothing came from the client within first_byte_timeout.",
        value: |f| f.first_byte_timeouts as f64,
    },
    Metric {
        name: "halo_frontend_refused_total",
        kind: "counter",
        help: "Connections closed at accept: their source is not in the frontend's allow list.",
        value: |f| f.refused as f64,
    },
    Metric {
        name: "halo_frontend_kernel_forwarded_total",
        kind: "counter",
        help: "Connections whose bytes the kernel forwarded ([balancer] forwarding), taken over in an upgrade included.",
        value: |f| f.kernel_forwarded as f64,
    },
    Metric {
        name: "halo_frontend_no_server_total",
        kind: "counter",
        help: "Connections closed because no server could take them.",
        value: |f| f.no_server as f64,
    },
];

const SERVER_METRICS: &[Metric<ServerJson>] = &[
    Metric {
        name: "halo_server_up",
        kind: "gauge",
        help: "1 while the server passes its health check.",
        value: |s| f64::from(u8::from(s.healthy)),
    },
    Metric {
        name: "halo_server_drain",
        kind: "gauge",
        help: "1 while an operator drains the server (halo server drain): no new connections.",
        value: |s| f64::from(u8::from(s.admin == "drain")),
    },
    Metric {
        name: "halo_server_maint",
        kind: "gauge",
        help: "1 while an operator holds the server in maintenance (halo server maint): no new connections, no checks.",
        value: |s| f64::from(u8::from(s.admin == "maint")),
    },
    Metric {
        name: "halo_server_weight",
        kind: "gauge",
        help: "Weight in effect: an operator's run-time weight (halo server weight), else the configured one.",
        value: |s| f64::from(s.weight),
    },
    Metric { name: "halo_server_connections", kind: "gauge", help: "Connections open now.", value: |s| s.connections as f64 },
    Metric { name: "halo_server_connections_total", kind: "counter", help: "Connections served.", value: |s| s.total as f64 },
    Metric { name: "halo_server_bytes_up_total", kind: "counter", help: "Bytes from clients to the server.", value: |s| s.bytes_up as f64 },
    Metric {
        name: "halo_server_bytes_down_total",
        kind: "counter",
        help: "Bytes from the server to clients.",
        value: |s| s.bytes_down as f64,
    },
    Metric {
        name: "halo_server_connect_errors_total",
        kind: "counter",
        help: "Failed or timed-out connects.",
        value: |s| s.connect_errors as f64,
    },
    Metric {
        name: "halo_server_local_errors_total",
        kind: "counter",
        help: "Connects and checks that failed for halo's own reasons (descriptors, ports): not counted against the server.",
        value: |s| s.local_errors as f64,
    },
    Metric {
        name: "halo_server_retries_total",
        kind: "counter",
        help: "Connect attempts repeated on the server.",
        value: |s| s.retries as f64,
    },
    Metric {
        name: "halo_server_redispatches_total",
        kind: "counter",
        help: "Clients sent elsewhere after the server failed them.",
        value: |s| s.redispatches as f64,
    },
    Metric { name: "halo_server_health_flips_total", kind: "counter", help: "Health state changes.", value: |s| s.flips as f64 },
    Metric {
        name: "halo_server_last_check_latency_seconds",
        kind: "gauge",
        help: "Latency of the last passing check.",
        value: |s| s.check_latency_seconds,
    },
];

/// Writes one metric family: its HELP and TYPE lines, then `name{labels} value` per row (`name
/// value` for a row without labels).
fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: impl IntoIterator<Item = (String, f64)>) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in rows {
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }
}

/// Writes every metric of a table for rows given as (labels, item).
fn table<T>(out: &mut String, metrics: &[Metric<T>], rows: &[(String, &T)]) {
    for metric in metrics {
        family(out, metric.name, metric.kind, metric.help, rows.iter().map(|(labels, item)| (labels.clone(), (metric.value)(item))));
    }
}

/// The Prometheus text of everything the status endpoint knows.
pub(super) fn metrics(shared: &Shared) -> String {
    let status = snapshot(shared);
    let mut out = String::new();
    out.push_str(&format!(
        "# HELP halo_node_maintenance 1 while the node is in maintenance (halo node maintenance): no VIP held, nothing announced.\n\
         # TYPE halo_node_maintenance gauge\nhalo_node_maintenance {}\n",
        u8::from(status.maintenance)
    ));
    let instances: Vec<(String, &InstanceStatus)> = status.vrrp.iter().map(|(n, i)| (format!("instance=\"{}\"", label(n)), i)).collect();
    let states = ["INIT", "BACKUP", "MASTER", "FAULT"];
    let state_rows = instances
        .iter()
        .flat_map(|(labels, i)| states.iter().map(move |s| (format!("{labels},state=\"{s}\""), f64::from(u8::from(i.state == *s)))));
    family(&mut out, "halo_vrrp_state", "gauge", "1 for the state each VRRP instance is in.", state_rows);
    table(&mut out, INSTANCE_METRICS, &instances);
    let dropped_rows = instances
        .iter()
        .flat_map(|(labels, i)| i.dropped.iter().map(move |(r, c)| (format!("{labels},reason=\"{}\"", label(r)), *c as f64)));
    family(&mut out, "halo_vrrp_dropped_total", "counter", "VRRP packets dropped or ignored, by reason.", dropped_rows);
    let frontends: Vec<(String, &FrontendJson)> =
        status.frontends.iter().map(|f| (format!("frontend=\"{}\"", label(&f.name)), f)).collect();
    table(&mut out, FRONTEND_METRICS, &frontends);
    let servers: Vec<(String, &ServerJson)> = status
        .frontends
        .iter()
        .flat_map(|f| f.servers.iter().map(move |s| (format!("backend=\"{}\",server=\"{}\"", label(&f.backend), label(&s.name)), s)))
        .collect();
    table(&mut out, SERVER_METRICS, &servers);
    check_latency_histogram(&mut out, &servers);
    let announced = status
        .announce
        .iter()
        .map(|(name, a)| (format!("announce=\"{}\",address=\"{}\"", label(name), label(&a.address)), f64::from(u8::from(a.announced))));
    family(
        &mut out,
        "halo_announce_announced",
        "gauge",
        "1 while the address is announced by BGP (held for FRR to redistribute).",
        announced,
    );
    outcomes(&mut out, &status);
    out
}

/// The last reload's and the last upgrade's outcomes: no sample before the first of each.
fn outcomes(out: &mut String, status: &StatusJson) {
    let reload = status.last_reload.as_ref();
    family(
        out,
        "halo_last_reload_success",
        "gauge",
        "1 if the last reload (SIGHUP) put its file in force, 0 if it was refused and the previous configuration runs on.",
        reload.map(|r| (String::new(), f64::from(u8::from(r.applied)))),
    );
    family(
        out,
        "halo_last_reload_timestamp_seconds",
        "gauge",
        "When the last reload ended, in seconds since the Unix epoch.",
        reload.map(|r| (String::new(), seconds(r.at_unix_ms))),
    );
    let upgrade = status.last_upgrade.as_ref();
    family(
        out,
        "halo_last_upgrade_success",
        "gauge",
        "1 if the last upgrade this process tried handed over to the new binary, 0 if it was refused and this process runs on.",
        upgrade.map(|u| (String::new(), f64::from(u8::from(u.handed_over)))),
    );
    family(
        out,
        "halo_last_upgrade_timestamp_seconds",
        "gauge",
        "When the last upgrade this process tried ended, in seconds since the Unix epoch.",
        upgrade.map(|u| (String::new(), seconds(u.at_unix_ms))),
    );
}

/// Milliseconds since the Unix epoch as seconds.
fn seconds(unix_ms: u64) -> f64 {
    unix_ms as f64 / 1000.0
}

/// The health checks' latency as one Prometheus histogram per server.
fn check_latency_histogram(out: &mut String, servers: &[(String, &ServerJson)]) {
    out.push_str(
        "# HELP halo_server_check_latency_seconds Latency of passing health checks.\n# TYPE halo_server_check_latency_seconds histogram\n",
    );
    for (labels, server) in servers {
        for (bound, count) in &server.check_latency_histogram {
            out.push_str(&format!("halo_server_check_latency_seconds_bucket{{{labels},le=\"{bound}\"}} {count}\n"));
        }
        let total = server.check_latency_histogram.last().map_or(0, |(_, c)| *c);
        out.push_str(&format!("halo_server_check_latency_seconds_sum{{{labels}}} {}\n", server.check_latency_sum_seconds));
        out.push_str(&format!("halo_server_check_latency_seconds_count{{{labels}}} {total}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of one family, its HELP and TYPE lines left out.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.split([' ', '{']).next() == Some(name)).collect()
    }

    /// The value of the one sample of a family without labels.
    fn value(text: &str, name: &str) -> f64 {
        let lines = samples(text, name);
        assert_eq!(lines.len(), 1, "{name}: {text}");
        lines[0].strip_prefix(&format!("{name} ")).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{}", lines[0]))
    }

    fn now_seconds() -> f64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }

    const OUTCOMES: [&str; 4] = [
        "halo_last_reload_success",
        "halo_last_reload_timestamp_seconds",
        "halo_last_upgrade_success",
        "halo_last_upgrade_timestamp_seconds",
    ];

    #[test]
    fn before_any_reload_or_upgrade_their_families_are_described_without_a_sample() {
        let text = metrics(&Shared::default());
        for name in OUTCOMES {
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
            assert!(samples(&text, name).is_empty(), "{text}");
        }
    }

    #[test]
    fn the_last_reload_reads_1_when_applied_0_when_refused_and_when_it_ended_in_seconds() {
        let shared = Shared::default();
        shared.set_reload(false, "line 3: unknown key".to_string());
        let text = metrics(&shared);
        assert_eq!(value(&text, "halo_last_reload_success"), 0.0);
        let at = value(&text, "halo_last_reload_timestamp_seconds");
        assert!((at - now_seconds()).abs() < 60.0, "seconds, not milliseconds: {at}");
        let ms = shared.last_reload().map(|r| r.at_unix_ms).unwrap_or_default();
        assert_eq!(at, ms as f64 / 1000.0);
        assert!(samples(&text, "halo_last_upgrade_success").is_empty(), "a reload is no upgrade: {text}");

        shared.set_reload(true, "applied".to_string());
        assert_eq!(value(&metrics(&shared), "halo_last_reload_success"), 1.0);
    }

    #[test]
    fn the_last_upgrade_reads_1_when_handed_over_0_when_refused_and_when_it_ended_in_seconds() {
        let shared = Shared::default();
        shared.set_upgrade(false, "the new binary did not start".to_string());
        let text = metrics(&shared);
        assert_eq!(value(&text, "halo_last_upgrade_success"), 0.0);
        let at = value(&text, "halo_last_upgrade_timestamp_seconds");
        assert!((at - now_seconds()).abs() < 60.0, "seconds, not milliseconds: {at}");
        assert!(samples(&text, "halo_last_reload_success").is_empty(), "an upgrade is no reload: {text}");

        shared.set_upgrade(true, "handed over to pid 42".to_string());
        assert_eq!(value(&metrics(&shared), "halo_last_upgrade_success"), 1.0);
    }

    #[test]
    fn a_family_without_labels_writes_its_samples_without_braces() {
        let mut out = String::new();
        family(&mut out, "x", "gauge", "An x.", [(String::new(), 1.5), ("a=\"b\"".to_string(), 2.0)]);
        assert_eq!(out, "# HELP x An x.\n# TYPE x gauge\nx 1.5\nx{a=\"b\"} 2\n");
    }
}
