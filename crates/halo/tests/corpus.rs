//! The corpus (testdata/corpus/): our own haproxy.cfg and keepalived.conf files in the shapes
//! real clusters publish (PATTERNS.md says which and where they were seen). Each one is checked
//! by the real tool (`haproxy -c`, `keepalived --config-test`, through testdata/corpus/check.sh)
//! and by `halo import` + `halo check`, inside a network namespace and a private mount namespace
//! whose /etc/hosts is the corpus' hosts file and whose nsswitch resolves from files only, so no
//! lookup leaves. A file the real tool accepts must import and pass `halo check`; a file it
//! rejects must be refused with file:line. A file may differ from its tool's verdict only when
//! it says why on a line `# halo: imports: ...` or `# halo: refuses: ...`. The tally is printed.

mod lan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lan::{Netns, can_run};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/corpus").canonicalize().expect("corpus")
}

/// The real tools' verdicts: file (like `haproxy/01-x.cfg`) -> accepted.
fn tool_verdicts() -> BTreeMap<String, bool> {
    let out = std::process::Command::new("sh").arg(corpus().join("check.sh")).output().expect("check.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let verdicts: BTreeMap<String, bool> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (file, _code, verdict) = (words.next()?, words.next()?, words.next()?);
            Some((file.to_string(), verdict == "accepted"))
        })
        .collect();
    assert!(verdicts.len() >= 40, "check.sh gave {} verdicts:\n{text}\n{}", verdicts.len(), String::from_utf8_lossy(&out.stderr));
    verdicts
}

/// What halo said of one file.
struct Outcome {
    imported: bool,
    checked: bool,
    stderr: String,
}

/// `halo import` (and `halo check` of its result) on `file`, inside `ns` with the corpus' hosts.
fn halo(ns: &Netns, dir: &Path, file: &str) -> Outcome {
    let halo = env!("CARGO_BIN_EXE_halo");
    let corpus = corpus();
    let out = dir.join(file.replace('/', "_")).with_extension("toml");
    let kind = if file.starts_with("haproxy/") { "--haproxy" } else { "--keepalived" };
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&nsswitch, "passwd: files\ngroup: files\nhosts: files\n").expect("nsswitch");
    let script = format!(
        "mount --bind {hosts} /etc/hosts && mount --bind {nss} /etc/nsswitch.conf && \
         mkdir -p /etc/keepalived && mount -t tmpfs -o mode=755 tmpfs /etc/keepalived && cp {scripts}/* /etc/keepalived/ && \
         cd {corpus} && {halo} import {kind} {file} --config-id lb1 -o {out}; echo \"import=$?\" >&2; \
         [ -f {out} ] && {halo} check -c {out}; echo \"check=$?\" >&2",
        hosts = corpus.join("hosts").display(),
        nss = nsswitch.display(),
        scripts = corpus.join("keepalived/scripts").display(),
        corpus = corpus.display(),
        out = out.display(),
    );
    let output = ns.sh(&script);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Outcome { imported: stderr.contains("import=0"), checked: stderr.contains("check=0"), stderr }
}

/// The file's own word on a verdict halo does not share with the real tool.
fn declared(file: &str) -> Option<(bool, String)> {
    let text = std::fs::read_to_string(corpus().join(file)).expect("corpus file");
    text.lines().find_map(|l| {
        let l = l.trim_start_matches(['#', '!']).trim();
        if let Some(why) = l.strip_prefix("halo: imports:") {
            Some((true, why.trim().to_string()))
        } else {
            l.strip_prefix("halo: refuses:").map(|why| (false, why.trim().to_string()))
        }
    })
}

#[test]
fn every_file_the_classic_tools_accept_imports_and_the_rest_are_refused_with_a_line() {
    if !can_run(
        "every_file_the_classic_tools_accept_imports_and_the_rest_are_refused_with_a_line",
        true,
        &["ip", "unshare", "haproxy", "keepalived"],
    ) {
        return;
    }
    let verdicts = tool_verdicts();
    let ns = Netns::new();
    for interface in std::fs::read_to_string(corpus().join("interfaces")).expect("interfaces").lines().filter(|l| !l.trim().is_empty()) {
        ns.add_interface(interface.trim());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut tally: BTreeMap<(&str, bool, bool), usize> = BTreeMap::new();
    let mut exceptions = Vec::new();
    for (file, accepted) in &verdicts {
        let outcome = halo(&ns, dir.path(), file);
        let tool = if file.starts_with("haproxy/") { "haproxy" } else { "keepalived" };
        *tally.entry((tool, *accepted, outcome.imported && outcome.checked)).or_default() += 1;
        let expected = match declared(file) {
            Some((imports, why)) => {
                exceptions.push(format!(
                    "  {file}: real tool {}, halo {}: {why}",
                    if *accepted { "accepts" } else { "rejects" },
                    if imports { "imports" } else { "refuses" }
                ));
                imports
            }
            None => *accepted,
        };
        let refused_with_line = outcome.stderr.lines().any(|l| l.starts_with(file.as_str()) && l.contains(": error: "));
        let ok = if expected { outcome.imported && outcome.checked } else { !outcome.imported && refused_with_line };
        if !ok {
            failures.push(format!(
                "{file}: expected halo to {}\n{}",
                if expected { "import and check" } else { "refuse with file:line" },
                outcome.stderr
            ));
        }
    }
    println!("corpus tally (real tool verdict -> halo import + check):");
    for ((tool, accepted, imported), n) in &tally {
        println!(
            "  {tool}: {n} file(s) {} by the tool, {} by halo",
            if *accepted { "accepted" } else { "rejected" },
            if *imported { "imported" } else { "refused" }
        );
    }
    println!("declared differences:\n{}", exceptions.join("\n"));
    assert!(failures.is_empty(), "{} of {} files:\n{}", failures.len(), verdicts.len(), failures.join("\n"));
}
