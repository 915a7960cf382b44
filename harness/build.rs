//! Compiles the eBPF probes in `ebpf/*.bpf.c` with clang into `$OUT_DIR/<name>.bpf.o`,
//! where `probes/drops.rs` and `probes/hooks.rs` embed them, and the datapath fixtures
//! (programs under test, `fixtures/datapath/*.bpf.c`) into `$OUT_DIR/fixtures/datapath/`,
//! listed in `$OUT_DIR/datapath_fixtures.rs` for `probes/program.rs` to embed (they are
//! never committed as binaries). eBPF is written in C
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
        compile(&clang, source, &ebpf_dir, &out_dir, None)?;
        let name = source.file_name().unwrap_or_default().to_string_lossy();
        if ALLOC_ON_INSERT
            .iter()
            .any(|stem| name == format!("{stem}.bpf.c"))
        {
            compile(
                &clang,
                source,
                &ebpf_dir,
                &out_dir,
                Some(ALLOC_ON_INSERT_DEFINE),
            )?;
        }
    }
    compile_fixtures(&clang, &manifest_dir, &out_dir)
}

/// The probes with per-CPU counter hashes, built a second time into
/// `<stem>.bpf.alloc_on_insert.o` with their entries allocated as they are first used
/// instead of all at creation (see DROPSPEC_COUNTER_MAP_FLAGS in `ebpf/slots.bpf.h`;
/// `probes::loader::object_for_kernel` chooses between the two builds).
const ALLOC_ON_INSERT: &[&str] = &["drops", "hooks", "watch"];
const ALLOC_ON_INSERT_DEFINE: &str = "DROPSPEC_ALLOC_ON_INSERT";

/// The datapath fixtures are ordinary user programs: they include the system's uapi
/// headers (`linux/bpf.h`, `linux/ip.h`, …), found under the multiarch include directory.
fn compile_fixtures(clang: &str, manifest_dir: &Path, out_dir: &Path) -> Result<()> {
    let dir = manifest_dir
        .parent()
        .context("harness/ has no parent directory")?
        .join("fixtures/datapath");
    println!("cargo:rerun-if-changed={}", dir.display());
    let fixtures_out = out_dir.join("fixtures/datapath");
    std::fs::create_dir_all(&fixtures_out)
        .with_context(|| format!("while creating {}", fixtures_out.display()))?;
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .with_context(|| format!("while listing fixtures in {}", dir.display()))?
    {
        let path = entry?.path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.to_string_lossy().ends_with(".bpf.c") {
            sources.push(path);
        }
    }
    sources.sort();
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Err(_) => "x86_64-linux-gnu".to_owned(),
        Ok(arch) => format!("{arch}-linux-gnu"),
    };
    let mut listing = String::from(
        "/// The fixtures built from fixtures/datapath/*.bpf.c: (name as a scenario gives it, object).\n\
         pub static DATAPATH_FIXTURES: &[(&str, &[u8])] = &[\n",
    );
    for source in &sources {
        compile(
            clang,
            source,
            &Path::new("/usr/include").join(&multiarch),
            &fixtures_out,
            None,
        )?;
        let stem = source
            .file_name()
            .context("fixture without a file name")?
            .to_string_lossy()
            .trim_end_matches(".c")
            .to_owned();
        listing.push_str(&format!(
            "    (\"datapath/{stem}.o\", aya::include_bytes_aligned!({:?})),\n",
            fixtures_out.join(format!("{stem}.o"))
        ));
    }
    listing.push_str("];\n");
    std::fs::write(out_dir.join("datapath_fixtures.rs"), listing)
        .context("while writing datapath_fixtures.rs")?;
    Ok(())
}

/// Compiles `source` into `<stem>.o` in `out_dir`, or with `define` set into
/// `<stem>.<define in lower case, without its DROPSPEC_ prefix>.o`.
fn compile(
    clang: &str,
    source: &Path,
    include_dir: &Path,
    out_dir: &Path,
    define: Option<&str>,
) -> Result<()> {
    let file_name = source.file_name().context("source without a file name")?;
    let stem = file_name
        .to_string_lossy()
        .trim_end_matches(".c")
        .to_owned();
    let object = match define {
        None => out_dir.join(format!("{stem}.o")),
        Some(define) => out_dir.join(format!(
            "{stem}.{}.o",
            define.trim_start_matches("DROPSPEC_").to_lowercase()
        )),
    };
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
        .args(define.map(|define| format!("-D{define}")))
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
