//! agate, the Rust Gemini server the Gemini case compares with: built
//! once with `cargo install agate --root <target>/bench-peers/agate` (a
//! few minutes on two cores; the binary is kept there and found by later
//! runs), run with its certificate directory holding the run's
//! certificate as DER (`cert.der`, `key.der`, also under `localhost/`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::certs::CertFiles;
use crate::proc::{free_port, Launch, PortFrom, Proc};

/// The installed binary, built (when `install`) if missing.
pub fn ensure(install: bool) -> Result<PathBuf, String> {
    let root = super::dir().join("agate");
    let bin = root.join("bin").join("agate");
    if bin.exists() {
        return Ok(bin);
    }
    if !install {
        return Err(format!(
            "not built yet ({} is missing; a full run builds it once, a few minutes)",
            bin.display()
        ));
    }
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    eprintln!(
        "peers: cargo install agate --root {} (a few minutes, once)",
        root.display()
    );
    let status = Command::new(&cargo)
        .args(["install", "--quiet", "agate", "--root"])
        .arg(&root)
        // Our own build's target directory is not agate's.
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", cargo.display()))?;
    if !status.success() || !bin.exists() {
        return Err(format!("cargo install agate failed ({status})"));
    }
    Ok(bin)
}

/// agate's version (`agate --version`).
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        // Some versions print it on stderr.
        .map(|o| {
            let out = if o.stdout.is_empty() { &o.stderr } else { &o.stdout };
            String::from_utf8_lossy(out).trim().to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Start agate serving `content` for `localhost` with `certs`, pinned to
/// `core`, its log off (twistor and jetforce log nowhere either: no logger
/// is installed, and jetforce's goes to a null device).
pub fn serve(bin: &Path, content: &Path, certs: &CertFiles, core: usize) -> io::Result<Proc> {
    let dir = certs.dir.join("agate");
    for d in [dir.clone(), dir.join("localhost")] {
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("cert.der"), &certs.cert_der)?;
        std::fs::write(d.join("key.der"), &certs.key_der)?;
    }
    let port = free_port()?;
    Proc::spawn(Launch {
        name: "agate",
        program: bin,
        args: vec![
            "--content".into(),
            content.display().to_string(),
            "--certs".into(),
            dir.display().to_string(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--hostname".into(),
            "localhost".into(),
        ],
        env: vec![("RUST_LOG", "off".into())],
        core: Some(core),
        port: PortFrom::Told(port),
        stderr: false,
    })
}
