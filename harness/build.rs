//! Compiles the eBPF probes in `ebpf/*.bpf.c` with clang into `$OUT_DIR/<name>.bpf.o`,
//! where `probes/drops.rs` and `probes/hooks.rs` embed them. eBPF is written in C
//! because the Rust eBPF toolchain (bpf-linker) is not available on our machines; aya
//! loads the objects either way.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The clang we test with; `DROPSPEC_CLANG=/path/to/clang` picks another (any clang
/// with the BPF target, 11 or newer, will do).
const CLANG: &str = "clang-19";
const CLANG_ENV: &str = "DROPSPEC_CLANG";

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("harness/ has no parent directory")?
        .join("ebpf");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!("cargo:rerun-if-env-changed={CLANG_ENV}");
    let clang = std::env::var(CLANG_ENV).unwrap_or_else(|_| CLANG.to_owned());

    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&ebpf_dir)
        .with_context(|| format!("while listing eBPF sources in {}", ebpf_dir.display()))?
    {
        let path = entry?.path();
        // Headers are inputs too: rerun-if-changed on a directory only sees added/removed files.
        println!("cargo:rerun-if-changed={}", path.display());
        if path.to_string_lossy().ends_with(".bpf.c") {
            sources.push(path);
        }
    }
    sources.sort();
    if sources.is_empty() {
        bail!("no eBPF sources (*.bpf.c) in {}", ebpf_dir.display());
    }
    for source in &sources {
        compile(&clang, source, &ebpf_dir, &out_dir)?;
    }
    Ok(())
}

fn compile(clang: &str, source: &Path, include_dir: &Path, out_dir: &Path) -> Result<()> {
    let file_name = source.file_name().context("source without a file name")?;
    let stem = file_name
        .to_string_lossy()
        .trim_end_matches(".c")
        .to_owned();
    let object = out_dir.join(format!("{stem}.o"));
    // bpf_tracing.h wants the host architecture spelled the kernel's way.
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("s390x") => "s390",
        Ok("powerpc64") => "powerpc",
        Ok(other) => other,
        Err(_) => "x86",
    }
    .to_owned();

    let output = Command::new(clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg("-I")
        .arg(include_dir)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{clang} not found: the eBPF probes are C compiled with clang. \
             Install it with `apt-get install clang-19 libbpf-dev` (or point {CLANG_ENV} at a clang)"
        ),
        Err(e) => return Err(e).with_context(|| format!("while running {clang}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            "\nlibbpf headers are missing: `apt-get install clang-19 libbpf-dev`"
        } else {
            ""
        };
        bail!(
            "{clang} failed to compile {} ({}):\n{stderr}{hint}",
            source.display(),
            output.status
        );
    }
    Ok(())
}
