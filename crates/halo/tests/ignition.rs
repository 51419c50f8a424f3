//! The Ignition config `scripts/ignition.sh` writes for an ostree host: Ignition's own validator
//! (Debian's ignition-validate) accepts it and refuses a broken one, the files it installs are
//! the halo.toml given and the Quadlet unit `halo render quadlet` writes for it, the image is
//! checked against its SHA-512, and the loader unit passes `systemd-analyze verify`.

mod lan;

use std::path::Path;
use std::process::Command;

use lan::can_run;

fn ignition(config: &Path, image: &Path) -> serde_json::Value {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ignition.sh"))
        .arg("-c")
        .arg(config)
        .arg("--image")
        .arg(image)
        .args(["--image-url", "https://provisioning.internal/halo.oci.tar"])
        .env("HALO", env!("CARGO_BIN_EXE_halo"))
        .output()
        .expect("ignition.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// An archive whose index names `reference`, as scripts/image.sh's does (only the index: the
/// script reads nothing else, and Ignition only its hash).
fn archive_naming(dir: &Path, reference: &str) -> std::path::PathBuf {
    let layout = dir.join(format!("layout-{}", reference.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&layout).expect("layout");
    let index = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:00\",\"size\":1,\"annotations\":{{\"org.opencontainers.image.ref.name\":\"{reference}\"}}}}]}}"
    );
    std::fs::write(layout.join("index.json"), index).expect("index");
    let archive = dir.join(format!("{}.tar", layout.file_name().expect("name").to_string_lossy()));
    let tarred = Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg("index.json").status().expect("tar");
    assert!(tarred.success());
    archive
}

fn validate(file: &Path) -> (bool, String) {
    let out = Command::new("ignition-validate").arg(file).output().expect("ignition-validate");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The bytes of a `data:;base64,` source.
fn decoded(source: &str) -> Vec<u8> {
    let encoded = source.strip_prefix("data:;base64,").unwrap_or_else(|| panic!("not a base64 data URL: {source}"));
    let mut child =
        Command::new("base64").arg("-d").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("base64");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), encoded.as_bytes()).expect("write");
    child.wait_with_output().expect("base64").stdout
}

#[test]
fn the_ignition_config_validates_and_installs_the_config_its_quadlet_and_the_image() {
    if !can_run(
        "the_ignition_config_validates_and_installs_the_config_its_quadlet_and_the_image",
        false,
        &["ignition-validate", "base64", "sha512sum"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/halo.toml");
    let image = archive_naming(dir.path(), &format!("localhost/halo:{}", env!("CARGO_PKG_VERSION")));
    let document = ignition(&config, &image);
    let file = dir.path().join("halo.ign");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).expect("json")).expect("write");
    let (valid, said) = validate(&file);
    assert!(valid, "ignition-validate refused it: {said}");

    let files = document["storage"]["files"].as_array().expect("files");
    let source = |path: &str| -> String {
        let entry = files.iter().find(|f| f["path"] == path).unwrap_or_else(|| panic!("no {path}"));
        entry["contents"]["source"].as_str().expect("source").to_string()
    };
    assert_eq!(decoded(&source("/etc/halo/halo.toml")), std::fs::read(&config).expect("config"));
    let quadlet = Command::new(env!("CARGO_BIN_EXE_halo")).args(["render", "quadlet", "-c"]).arg(&config).output().expect("render");
    assert_eq!(decoded(&source("/etc/containers/systemd/halo.container")), quadlet.stdout);
    let version = env!("CARGO_PKG_VERSION");
    let archive = format!("/var/lib/halo/halo-{version}.oci.tar");
    let entry = files.iter().find(|f| f["path"] == archive.as_str()).expect("the image archive");
    let sha = Command::new("sha512sum").arg(&image).output().expect("sha512sum");
    let sha = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().expect("sum").to_string();
    assert_eq!(entry["contents"]["verification"]["hash"], format!("sha512-{sha}"));
    let needs = String::from_utf8(decoded(&source("/etc/systemd/system/halo.service.d/image.conf"))).expect("utf-8");
    assert!(needs.contains("Requires=halo-image.service") && needs.contains("After=halo-image.service"), "{needs}");

    let unit = &document["systemd"]["units"][0];
    assert_eq!(unit["name"], "halo-image.service");
    let contents = unit["contents"].as_str().expect("contents");
    assert!(contents.contains(&format!("ExecStart=/usr/bin/podman load --quiet --input {archive}")), "{contents}");
    if Path::new("/usr/bin/systemd-analyze").exists() && Path::new("/usr/bin/podman").exists() {
        let unit_file = dir.path().join("halo-image.service");
        // Without the [Install] target's dependencies, which this host has no unit for.
        std::fs::write(&unit_file, contents).expect("unit");
        let verify = Command::new("systemd-analyze").arg("verify").arg(&unit_file).output().expect("systemd-analyze");
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success(), "systemd-analyze verify: {said}");
    }

    // The validator is no rubber stamp: a mode given as text is refused.
    let mut broken = document.clone();
    broken["storage"]["files"][0]["mode"] = serde_json::json!("0644");
    std::fs::write(&file, serde_json::to_vec(&broken).expect("json")).expect("write");
    let (valid, said) = validate(&file);
    assert!(!valid, "ignition-validate took a mode given as text: {said}");
}

#[test]
fn the_ignition_script_refuses_an_archive_of_another_image() {
    let dir = tempfile::tempdir().expect("dir");
    let other = archive_naming(dir.path(), "localhost/halo:0.0.1");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ignition.sh"))
        .arg("-c")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/halo.toml"))
        .arg("--image")
        .arg(&other)
        .args(["--image-url", "https://provisioning.internal/halo.oci.tar"])
        .env("HALO", env!("CARGO_BIN_EXE_halo"))
        .output()
        .expect("ignition.sh");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("does not hold localhost/halo:{}", env!("CARGO_PKG_VERSION"))), "{said}");
}

#[test]
fn the_ignition_script_refuses_what_ignition_cannot_fetch() {
    let dir = tempfile::tempdir().expect("dir");
    let image = dir.path().join("image.tar");
    std::fs::write(&image, b"x").expect("image");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ignition.sh"))
        .arg("-c")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/halo.toml"))
        .arg("--image")
        .arg(&image)
        .args(["--image-url", "/srv/halo.oci.tar"])
        .env("HALO", env!("CARGO_BIN_EXE_halo"))
        .output()
        .expect("ignition.sh");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image-url must be a URL Ignition fetches"));
}
