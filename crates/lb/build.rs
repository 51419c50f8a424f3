//! Builds the kernel data path's BPF program (bpf/forward.c) with clang into the build's output
//! directory, where src/kernel/mod.rs embeds it: the program is built from its source by every
//! build, never carried as a binary.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/forward.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // The kernel's UAPI headers include <asm/types.h>, which Debian keeps under the multiarch
    // directory of the host.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "bpf/forward.c", "-o"])
        .arg(out.join("forward.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} could not build bpf/forward.c ({s}); scripts/setup.sh installs clang and libbpf-dev"),
        Err(e) => panic!("cannot run {clang} to build bpf/forward.c ({e}); scripts/setup.sh installs clang and libbpf-dev"),
    }
}
