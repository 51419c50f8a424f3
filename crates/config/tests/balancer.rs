//! `[balancer]`: `forwarding` defaults to `auto`, takes `auto`, `kernel` and `user`, refuses any
//! other value and any other key at their line:column, without hiding the other sections'
//! problems; halo.toml renders it back.

use halo_config::{Balancer, Diagnostic, Forwarding, LoadError, load_str, render};

const MINIMAL_LB: &str = r#"
[[frontend]]
name = "api"
bind = ["127.0.0.1:8443"]
backend = "api"

[[backend]]
name = "api"
[[backend.server]]
name = "m1"
address = "10.0.0.1:6443"
"#;

/// Every problem, in full (place, message and hint).
fn problems(text: &str) -> Vec<String> {
    match load_str("t.toml", text) {
        Ok(loaded) => loaded.warnings.iter().map(Diagnostic::to_string).collect(),
        Err(LoadError::Invalid(diagnostics)) => diagnostics.iter().map(Diagnostic::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

fn with(balancer: &str) -> String {
    format!("[balancer]\n{balancer}\n{MINIMAL_LB}")
}

#[test]
fn forwarding_is_auto_by_default() {
    assert_eq!(Balancer::default().forwarding, Forwarding::Auto);
    let config = load_str("t.toml", MINIMAL_LB).expect("loads").config;
    assert_eq!(config.balancer, Balancer { forwarding: Forwarding::Auto, kernel_after: halo_config::KERNEL_AFTER });
    let config = load_str("t.toml", &with("")).expect("an empty [balancer] loads").config;
    assert_eq!(config.balancer.forwarding, Forwarding::Auto);
    let config = load_str("t.toml", &with("forwarding = \"user\"")).expect("loads").config;
    assert_eq!(config.balancer.forwarding, Forwarding::User);
}

#[test]
fn each_forwarding_value_parses() {
    for (word, mode) in [("auto", Forwarding::Auto), ("kernel", Forwarding::Kernel), ("user", Forwarding::User)] {
        let loaded = load_str("t.toml", &with(&format!("forwarding = \"{word}\""))).expect(word);
        assert_eq!(loaded.config.balancer.forwarding, mode, "{word}");
        assert!(loaded.warnings.is_empty(), "{word}: {:?}", loaded.warnings);
    }
}

#[test]
fn an_unknown_forwarding_is_an_error_at_its_place_naming_the_choices() {
    let got = problems(&with("forwarding = \"bpf\""));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0], "t.toml:2:14: error: balancer.forwarding: unknown value `bpf`\n    hint: one of: auto, kernel, user");
}

#[test]
fn an_unknown_key_in_balancer_is_refused() {
    let got = problems(&with("forwarding = \"user\"\nsplice = true"));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("t.toml:3:1: error: unknown field `splice`, expected `forwarding` or `kernel_after`"), "{got:#?}");
    let got = problems(&format!("balancer = \"kernel\"\n{MINIMAL_LB}"));
    assert!(got.iter().any(|p| p.starts_with("t.toml:1:12: error: invalid type")), "{got:#?}");
}

#[test]
fn a_bad_balancer_section_does_not_hide_other_problems() {
    let text = format!("[log]\nformat = \"xml\"\n\n[balancer]\nforwardng = \"user\"\n{MINIMAL_LB}");
    let got = problems(&text);
    assert!(got.iter().any(|p| p.starts_with("t.toml:2:10: error: log.format: unknown value `xml`")), "{got:#?}");
    assert!(got.iter().any(|p| p.starts_with("t.toml:5:1: error: unknown field `forwardng`")), "{got:#?}");
}

#[test]
fn halo_toml_writes_the_section_only_when_not_the_default_and_loads_it_back() {
    let mut config = load_str("t.toml", MINIMAL_LB).expect("loads").config;
    assert!(!render::halo_toml(&config, &Default::default()).contains("[balancer]"));
    for mode in [Forwarding::Kernel, Forwarding::User] {
        config.balancer.forwarding = mode;
        let text = render::halo_toml(&config, &Default::default());
        assert!(text.contains("[balancer]\nforwarding = "), "{text}");
        assert_eq!(load_str("rendered.toml", &text).expect("rendered loads").config, config);
    }
}

#[test]
fn kernel_after_is_a_duration_zero_allowed_one_second_by_default() {
    assert_eq!(load_str("t.toml", MINIMAL_LB).expect("loads").config.balancer.kernel_after, std::time::Duration::from_secs(1));
    let at_once = load_str("t.toml", &with("kernel_after = \"0s\"")).expect("loads").config;
    assert_eq!(at_once.balancer.kernel_after, std::time::Duration::ZERO);
    let got = problems(&with("kernel_after = \"soon\""));
    assert!(got.iter().any(|p| p.starts_with("t.toml:2:16: error: balancer.kernel_after")), "{got:#?}");
}
