//! The commands of `vrrp_script` and `notify*` lines: split like keepalived splits them (no
//! shell), programs named without a path found through PATH as keepalived finds them, shell
//! syntax that reaches the program as arguments pointed out, and the checks that only ask "is
//! the local balancer alive" recognised, since halo answers that itself.

use super::super::lines::{Resolver, words};
use super::Node;
use crate::import::Sink;

/// Words that mean something to a shell, and nothing to keepalived, which runs the program
/// directly: they reach it as arguments.
const SHELL_WORDS: &[&str] = &["||", "&&", ";", "|", ">", ">>", "<", "2>&1", "&>", "2>", "1>", "&"];

/// What a command line is, once read.
#[derive(Debug)]
pub(super) enum Command {
    /// A program to run, with an absolute path.
    Run(Vec<String>),
    /// A program keepalived would not find: keepalived disables the script.
    NotFound(String),
    /// Asks whether the local haproxy is alive (`killall -0 haproxy`, `pidof haproxy`, a curl
    /// to a local port, ...): the original words.
    BalancerAlive(Vec<String>),
}

/// Reads the command from word `first` of `node` on; `None` (with an error) when there is none.
/// Liveness checks of haproxy are recognised only when `balancer_known` (a frontend exists to
/// track instead).
pub(super) fn read(node: &Node, first: usize, resolver: &dyn Resolver, balancer_known: bool, sink: &mut Sink) -> Option<Command> {
    let text = node.words.get(first..).map(|w| w.join(" ")).unwrap_or_default();
    let Some(mut argv) = words(&text, &[]).filter(|a| !a.is_empty()) else {
        sink.error(&node.file, node.line, format!("`{}` needs a command", node.keyword()), "");
        return None;
    };
    if balancer_known && asks_balancer_alive(&argv) {
        return Some(Command::BalancerAlive(argv));
    }
    shell_syntax(node, &argv, sink);
    if !argv[0].starts_with('/') {
        match resolver.which(&argv[0]) {
            Some(path) => {
                sink.warn(
                    &node.file,
                    node.line,
                    format!("`{}` runs `{}` found through PATH: imported as {path}", node.keyword(), argv[0]),
                    "halo runs commands by their full path, never through a PATH search",
                );
                argv[0] = path;
            }
            None => return Some(Command::NotFound(argv[0].clone())),
        }
    }
    Some(Command::Run(argv))
}

/// `||`, `;`, pipes and redirections inside a script line: keepalived passes them to the program
/// as arguments (it runs no shell), and so does halo; say so once per line.
fn shell_syntax(node: &Node, argv: &[String], sink: &mut Sink) {
    let shell = argv.iter().find(|w| SHELL_WORDS.contains(&w.as_str()) || w.starts_with("$(") || w.contains('`'));
    if let Some(word) = shell {
        let line = argv.join(" ");
        sink.warn(
            &node.file,
            node.line,
            format!(
                "`{}` contains the shell syntax `{word}`: no shell runs it, so it reaches `{}` as an argument (in keepalived too)",
                node.keyword(),
                argv[0]
            ),
            format!("to run it through a shell, write: /bin/sh -c '{}'", line.replace('\'', "'\\''")),
        );
    }
}

/// The checks that ask whether the local haproxy runs or answers: a process check on haproxy,
/// its systemd unit, or an HTTP client to a local address.
fn asks_balancer_alive(argv: &[String]) -> bool {
    let program = argv[0].rsplit('/').next().unwrap_or_default();
    let names_haproxy = argv[1..].iter().any(|a| a == "haproxy" || a == "haproxy.service");
    match program {
        "killall" | "pidof" | "pgrep" => names_haproxy,
        "systemctl" => argv.iter().any(|a| a == "is-active") && names_haproxy,
        "curl" | "wget" => argv[1..].iter().any(|a| is_local_url(a)),
        _ => false,
    }
}

fn is_local_url(word: &str) -> bool {
    let rest = word.strip_prefix("https://").or_else(|| word.strip_prefix("http://")).unwrap_or(word);
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|host| rest.starts_with(host) && rest[host.len()..].starts_with([':', '/']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn liveness_checks_of_the_local_haproxy_are_recognised() {
        for yes in [
            "killall -0 haproxy",
            "/usr/bin/killall -0 haproxy",
            "pidof haproxy",
            "pgrep -x haproxy",
            "systemctl is-active --quiet haproxy.service",
            "curl -sfk https://localhost:8443/healthz",
            "/usr/bin/curl --fail http://127.0.0.1:9000/",
        ] {
            assert!(asks_balancer_alive(&argv(yes)), "{yes}");
        }
        for no in ["killall -0 nginx", "pidof keepalived", "curl -sf https://10.0.0.1:6443/", "systemctl restart haproxy", "/bin/true"] {
            assert!(!asks_balancer_alive(&argv(no)), "{no}");
        }
    }
}
