//! Stamps the binary's `--version` with the git commit it was built from and that commit's
//! date (`PROXY_GIT_COMMIT`, `PROXY_BUILD_DATE`).
//!
//! The date is the commit's, not the clock's, so the same commit builds the same binary.
//! Outside a git checkout (a source tarball, a container build without `.git`) both read `unknown`, or
//! come from `PROXY_GIT_COMMIT` / `PROXY_BUILD_DATE` in the environment.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PROXY_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=PROXY_BUILD_DATE");
    // A new commit or checkout moves HEAD's reflog; that is when the stamp changes.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("PROXY_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=10", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = std::env::var("PROXY_BUILD_DATE")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%cs", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PROXY_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PROXY_BUILD_DATE={date}");
}

/// What `git args` prints, trimmed, when git is there and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
