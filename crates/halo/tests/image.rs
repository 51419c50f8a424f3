//! halo's image as users run it: the archive `scripts/image.sh` builds (the test command builds
//! it first and names it in HALO_IMAGE) is rebuilt to the same digest, loads into podman and
//! into containerd (`ctr -n k8s.io images import`, against a containerd the test starts), and
//! runs as the static pod `halo render static-pod` writes, with `podman kube play`, on two
//! balancers of a lab: the VIP is held, the balancer serves, the orphans of a script are reaped,
//! and stopping the master's pod moves the VIP. Each balancer's podman has its own storage
//! under the test's directory and sees its own /etc (a copy, with the balancer's
//! /etc/halo/halo.toml, bind-mounted in a private mount namespace), so nothing of the host
//! changes. podman's settings for these machines (containers.conf): runc (crun refuses this
//! kernel's hybrid cgroups), cgroupfs, and ulimits under the hard limits (root here lacks
//! CAP_SYS_RESOURCE, and podman's defaults exceed them). Root only (run in CI); every process
//! left by podman is ended by PID, every namespace deleted.

mod lan;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lan::ns_server::{GreetingServer, in_ns};
use lan::{Lan, can_run, common, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const VIP: &str = "192.0.2.170";

fn reference() -> String {
    format!("localhost/halo:{VERSION}")
}

/// The archive the test command built, or `None` (skipped outside CI, a failure under it).
fn archive(test: &str) -> Option<PathBuf> {
    if !can_run(test, true, &["ip", "unshare", "nsenter", "podman", "buildah", "tar"]) {
        return None;
    }
    match std::env::var_os("HALO_IMAGE") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let why = "HALO_IMAGE names no image archive (scripts/test.sh builds one with scripts/image.sh)";
            assert!(!common::in_ci(), "{test}: {why}");
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The manifest digest an OCI archive's index names.
fn manifest_digest(archive: &Path) -> String {
    let out = Command::new("tar").arg("-xOf").arg(archive).arg("index.json").output().expect("tar");
    let index = String::from_utf8_lossy(&out.stdout).to_string();
    let start = index.find("sha256:").unwrap_or_else(|| panic!("no digest in {}: {index}", archive.display()));
    index[start..start + 71].to_string()
}

/// One podman of its own: storage, settings and (when `etc` is given) its own /etc, in a network
/// namespace.
struct Podman {
    dir: PathBuf,
    netns: Option<String>,
    etc: Option<PathBuf>,
}

impl Podman {
    fn new(dir: &Path, netns: Option<&str>, etc: Option<&Path>) -> Self {
        std::fs::create_dir_all(dir).expect("podman dir");
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=10000:10000\", \"nproc=10000:10000\"]\n\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
        )
        .expect("containers.conf");
        Self { dir: dir.to_path_buf(), netns: netns.map(str::to_string), etc: etc.map(Path::to_path_buf) }
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.display();
        let podman = format!("podman --root {d}/storage --runroot {d}/run --tmpdir {d}/tmp --storage-driver vfs \"$@\"",);
        let script = match &self.etc {
            Some(etc) => format!("mount --bind {} /etc && exec {podman}", etc.display()),
            None => format!("exec {podman}"),
        };
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private"]);
        // nsenter rather than `ip netns exec`, which mounts a /sys without the cgroup hierarchy.
        if let Some(ns) = &self.netns {
            command.arg("nsenter").arg(format!("--net=/run/netns/{ns}"));
        }
        command.args(["sh", "-c", &script, "podman"]).args(args).env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        command.stdin(Stdio::null()).output().expect("podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["pod", "rm", "--force", "--all"]);
        // conmon and what it watches outlive podman; whatever names this storage is ended.
        let mark = self.dir.display().to_string();
        for pid in processes_naming(&mark) {
            eprintln!("note: ending process {pid} left by podman");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Live processes whose command line holds `mark`.
fn processes_naming(mark: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(mark) && pid != std::process::id() as i32 {
            found.push(pid);
        }
    }
    found
}

#[test]
fn the_image_is_reproducible_and_loads_into_podman_and_containerd() {
    let test = "the_image_is_reproducible_and_loads_into_podman_and_containerd";
    let Some(archive) = archive(test) else { return };
    if !can_run(test, true, &["containerd", "ctr"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    // A second build of the same commit: the same image, byte for byte.
    let second = dir.path().join("second.oci.tar");
    let out = Command::new(repo().join("scripts/image.sh")).arg("--output").arg(&second).output().expect("image.sh");
    assert!(out.status.success(), "{}", text(&out));
    let digest = manifest_digest(&archive);
    assert_eq!(manifest_digest(&second), digest, "two builds of one commit differ");
    let size = std::fs::metadata(&archive).expect("archive").len();
    eprintln!("image {} ({} KiB archive), manifest {digest}", reference(), size / 1024);

    let podman = Podman::new(&dir.path().join("podman"), None, None);
    podman.ok(&["load", "--quiet", "--input", &archive.to_string_lossy()]);
    let images = podman.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]);
    assert!(images.contains(&reference()), "{images}");
    eprintln!("podman images: {}", images.trim());
    // The image's own entry point runs halo.
    let version = podman.ok(&["run", "--rm", "--network", "host", &reference(), "--version"]);
    assert_eq!(version.trim(), format!("halo {VERSION}"));
    // Every program the renders count on the image for is there.
    let check = halo_config::render::IMAGE_PROGRAMS.iter().map(|p| format!("test -x '{p}' || echo missing {p};")).collect::<String>();
    let missing = podman.ok(&["run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", &reference(), "-c", &check]);
    assert!(missing.trim().is_empty(), "{missing}");

    // containerd, as the kubelet's runtime has it: a daemon of the test's own, on its own socket.
    let state = dir.path().join("containerd");
    std::fs::create_dir_all(&state).expect("containerd dir");
    let socket = state.join("containerd.sock");
    let config = state.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\naddress = \"{1}\"\n[ttrpc]\naddress = \"{1}.ttrpc\"\n\
             [debug]\naddress = \"{0}/debug.sock\"\n[metrics]\naddress = \"\"\n",
            state.display(),
            socket.display()
        ),
    )
    .expect("containerd config");
    let log = std::fs::File::create(state.join("log")).expect("log");
    let mut containerd = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("containerd");
    let up = wait_for(Duration::from_secs(20), || socket.exists());
    let ctr =
        |args: &[&str]| Command::new("ctr").arg("--address").arg(&socket).args(["--namespace", "k8s.io"]).args(args).output().expect("ctr");
    let imported = up.map(|_| ctr(&["images", "import", &archive.to_string_lossy()]));
    let listed = up.map(|_| ctr(&["images", "list", "--quiet"]));
    let _ = containerd.kill();
    let _ = containerd.wait();
    let said = std::fs::read_to_string(state.join("log")).unwrap_or_default();
    let imported = imported.unwrap_or_else(|| panic!("containerd did not start:\n{said}"));
    assert!(imported.status.success(), "ctr images import: {}\n{said}", text(&imported));
    let listed = text(&listed.expect("listed"));
    assert!(listed.lines().any(|l| l.trim() == reference()), "ctr images list: {listed}");
}

/// A balancer's halo.toml; its state directory is `state`, a directory of the test's.
fn config(priority: u8, state: &Path) -> String {
    format!(
        "[node]\nstate_directory = \"{}\"\n\n[status]\nlisten = \"127.0.0.1:9470\"\n\n\
         [[vrrp]]\nname = \"api\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\nversion = 3\n\
         advert_interval = \"100ms\"\nvirtual_addresses = [\"{VIP}/24\"]\n\n\
         [[tracker]]\nname = \"orphans\"\nkind = \"script\"\ncommand = [\"/etc/halo/orphans.sh\"]\ninterval = \"300ms\"\nweight = 1\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"0.0.0.0:8443\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"500ms\"\n\
         [[backend.server]]\nname = \"m1\"\naddress = \"192.0.2.13:6443\"\n",
        state.display()
    )
}

/// A copy of this host's /etc holding `halo.toml` (and the script it runs) as /etc/halo.
fn etc_with(dir: &Path, config: &str) -> PathBuf {
    let etc = dir.join("etc");
    let copied = Command::new("cp").args(["-a", "/etc/."]).arg(&etc).status().expect("cp");
    assert!(copied.success() || etc.join("passwd").exists(), "copying /etc");
    let halo = etc.join("halo");
    let _ = std::fs::remove_dir_all(&halo);
    std::fs::create_dir_all(&halo).expect("etc/halo");
    std::fs::write(halo.join("halo.toml"), config).expect("halo.toml");
    // Leaves a child behind at every run: its parent (the tracker's shell) is gone when it ends.
    let script = halo.join("orphans.sh");
    std::fs::write(&script, "#!/bin/sh\n(sleep 0.1 &)\nexit 0\n").expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    etc
}

fn greeting(_peer: SocketAddr, _tag: &str) -> String {
    "hello from the API server".to_string()
}

/// A line through the VIP, from host 2 (the API server's host, a client of the VIP as well).
fn served(lan: &Lan) -> Option<String> {
    in_ns(lan.host(2), || {
        let target: SocketAddr = format!("{VIP}:8443").parse().expect("vip");
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        // Clients speak first (TLS): halo picks a server once the first bytes came.
        std::io::Write::write_all(&mut stream, b"hello\n").ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim().to_string())
    })
}

/// Zombie children of `pid` right now.
fn zombie_children(pid: i32) -> usize {
    let mut zombies = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut fields = rest.split_whitespace();
        if let (Some("Z"), Some(parent)) = (fields.next(), fields.next())
            && parent.parse::<i32>() == Ok(pid)
        {
            zombies += 1;
        }
    }
    zombies
}

#[test]
fn the_rendered_static_pod_holds_the_vip_serves_and_fails_over_under_podman() {
    let test = "the_rendered_static_pod_holds_the_vip_serves_and_fails_over_under_podman";
    let Some(archive) = archive(test) else { return };
    let lan = Lan::new(3);
    let _api = GreetingServer::start(lan.host(2), "192.0.2.13:6443", greeting, "api");
    let dir = tempfile::tempdir().expect("dir");
    let mut balancers = Vec::new();
    for (i, priority) in [(0usize, 200u8), (1, 100)] {
        let own = dir.path().join(format!("balancer{i}"));
        std::fs::create_dir_all(&own).expect("dir");
        let etc = etc_with(&own, &config(priority, &own.join("state")));
        // The manifest exactly as `halo render static-pod` writes it for this config.
        let pod = Command::new(env!("CARGO_BIN_EXE_halo"))
            .args(["render", "static-pod", "-c"])
            .arg(etc.join("halo/halo.toml"))
            .output()
            .expect("render");
        assert!(pod.status.success(), "{}", text(&pod));
        let manifest = own.join("halo.yaml");
        std::fs::write(&manifest, &pod.stdout).expect("manifest");
        let podman = Podman::new(&own.join("podman"), Some(lan.host(i)), Some(&etc));
        podman.ok(&["load", "--quiet", "--input", &archive.to_string_lossy()]);
        podman.ok(&["kube", "play", &manifest.to_string_lossy()]);
        balancers.push(podman);
    }
    let logs = |balancers: &[Podman]| -> String {
        balancers.iter().map(|p| text(&p.run(&["logs", "halo-halo"]))).collect::<Vec<_>>().join("\n---\n")
    };
    let held = wait_for(Duration::from_secs(30), || lan.holds(0, VIP));
    assert!(held.is_some(), "the master's pod never took the VIP:\n{}", logs(&balancers));
    std::thread::sleep(Duration::from_millis(700));
    assert!(!lan.holds(1, VIP), "both pods hold the VIP:\n{}", logs(&balancers));
    let first = wait_for(Duration::from_secs(20), || served(&lan).is_some_and(|l| l == "hello from the API server"));
    assert!(first.is_some(), "the master's pod does not serve {VIP}:8443 ({:?}):\n{}", served(&lan), logs(&balancers));
    // The liveness probe's target answers.
    let healthz = in_ns(lan.host(0), || {
        let mut stream = TcpStream::connect_timeout(&"127.0.0.1:9470".parse().expect("address"), Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.0\r\n\r\n").ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line)
    })
    .unwrap_or_default();
    assert!(healthz.contains("200"), "/healthz in the pod: {healthz:?}");

    // The script leaves an orphan at each of its runs (about 3 a second): PID 1 reaps them.
    let init: i32 = balancers[0].ok(&["inspect", "--format", "{{.State.Pid}}", "halo-halo"]).trim().parse().expect("pid 1 of the pod");
    std::thread::sleep(Duration::from_secs(3));
    let zombies = zombie_children(init);
    eprintln!("zombie children of the pod's PID 1 after 3 s of orphans: {zombies}");
    assert!(zombies <= 1, "{zombies} orphans of the script were not reaped by the pod's PID 1");

    // The master's pod stops: its halo gives the VIP up and the backup's takes it and serves.
    balancers[0].ok(&["pod", "stop", "--all"]);
    let moved = wait_for(Duration::from_secs(20), || lan.holds(1, VIP) && !lan.holds(0, VIP));
    assert!(moved.is_some(), "the VIP did not move when the master's pod stopped:\n{}", logs(&balancers));
    eprintln!("VIP moved to the backup's pod {:?} after the master's pod was stopped", moved.expect("moved"));
    let again = wait_for(Duration::from_secs(20), || served(&lan).is_some_and(|l| l == "hello from the API server"));
    assert!(again.is_some(), "the backup's pod does not serve {VIP}:8443:\n{}", logs(&balancers));
}

/// The `podman run` a Quadlet `.container` stands for, key by key as podman-systemd.unit(5)
/// maps them (this podman, 4.3, predates Quadlet). A key the test does not know fails it, so a
/// render that grows a key grows this mapping too. Notify=true becomes nothing here: no systemd
/// listens.
fn podman_run_of_quadlet(unit: &str) -> Vec<String> {
    let mut section = "";
    let (mut options, mut image, mut exec) = (vec!["run".to_string(), "--detach".to_string()], None, Vec::new());
    for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            // What systemd runs before the container: the directories podman wants to exist.
            if let Some(directory) = line.strip_prefix("ExecStartPre=/usr/bin/mkdir -p ") {
                std::fs::create_dir_all(directory).expect("ExecStartPre's directory");
            } else if line.starts_with("ExecStartPre=") {
                panic!("an ExecStartPre this test does not carry out: {line}");
            }
            continue;
        }
        if section != "[Container]" {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not a key: {line}"));
        match key {
            "Image" => image = Some(value.to_string()),
            "ContainerName" => options.extend(["--name".to_string(), value.to_string()]),
            "Network" => options.extend(["--network".to_string(), value.to_string()]),
            "Notify" => assert_eq!(value, "true"),
            "Exec" => exec = value.split_whitespace().map(str::to_string).collect(),
            "DropCapability" => value.split_whitespace().for_each(|c| options.extend(["--cap-drop".to_string(), c.to_lowercase()])),
            "AddCapability" => value.split_whitespace().for_each(|c| options.extend(["--cap-add".to_string(), c.to_string()])),
            "NoNewPrivileges" if value == "true" => options.extend(["--security-opt".to_string(), "no-new-privileges".to_string()]),
            "VolatileTmp" if value == "true" => options.extend(["--tmpfs".to_string(), "/tmp:rw,size=512M,mode=1777".to_string()]),
            "Volume" => options.extend(["--volume".to_string(), value.to_string()]),
            other => panic!("a Quadlet key this test does not map: {other}={value}"),
        }
    }
    options.push(image.expect("Image="));
    options.extend(exec);
    options
}

#[test]
fn the_rendered_quadlet_runs_the_image_and_gives_the_vip_up_when_stopped() {
    let test = "the_rendered_quadlet_runs_the_image_and_gives_the_vip_up_when_stopped";
    let Some(archive) = archive(test) else { return };
    let lan = Lan::new(3);
    let _api = GreetingServer::start(lan.host(2), "192.0.2.13:6443", greeting, "api");
    let dir = tempfile::tempdir().expect("dir");
    let etc = etc_with(dir.path(), &config(200, &dir.path().join("state")));
    let unit = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["render", "quadlet", "-c"])
        .arg(etc.join("halo/halo.toml"))
        .output()
        .expect("render");
    assert!(unit.status.success(), "{}", text(&unit));
    let run = podman_run_of_quadlet(&String::from_utf8_lossy(&unit.stdout));
    eprintln!("the quadlet as podman {}", run.join(" "));
    let podman = Podman::new(&dir.path().join("podman"), Some(lan.host(0)), Some(&etc));
    podman.ok(&["load", "--quiet", "--input", &archive.to_string_lossy()]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    podman.ok(&run);
    let logs = || text(&podman.run(&["logs", "halo"]));
    assert!(wait_for(Duration::from_secs(30), || lan.holds(0, VIP)).is_some(), "the quadlet's container never took the VIP:\n{}", logs());
    let through = wait_for(Duration::from_secs(20), || served(&lan).is_some_and(|l| l == "hello from the API server"));
    assert!(through.is_some(), "the quadlet's container does not serve {VIP}:8443:\n{}", logs());
    // systemctl reload: the unit's ExecReload, `halo reload` inside the container (its pid file
    // and status endpoint), through this test's podman.
    let unit_text = String::from_utf8_lossy(&unit.stdout).to_string();
    let reload = unit_text.lines().find_map(|l| l.strip_prefix("ExecReload=/usr/bin/podman ")).expect("ExecReload= runs podman");
    let reload: Vec<&str> = reload.split_whitespace().collect();
    let said = text(&podman.run(&reload));
    assert!(said.contains("applied"), "systemctl reload as the quadlet says: {said}\n{}", logs());
    // systemctl stop: podman stops the container, halo gives the VIP up at once.
    podman.ok(&["stop", "halo"]);
    assert!(!lan.holds(0, VIP), "the VIP stayed after the container stopped:\n{}", logs());
    let code = podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", "halo"]);
    assert_eq!(code.trim(), "0", "halo did not stop cleanly:\n{}", logs());
}
