//! Every config shipped under `config/` and `examples/` passes `proxy check`, with the
//! certificates its README says to make (`proxy mesh init`), in a copy of the tree.

use std::path::{Path, PathBuf};
use std::process::Command;

fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
}

/// Every `.yaml` file below `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Directories a run makes next to the configs (ignored by git): not part of what ships.
const MADE_BY_A_RUN: [&str; 4] = ["certs", "data", "state", "logs"];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() && MADE_BY_A_RUN.iter().any(|d| entry.file_name() == *d) {
            continue;
        }
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

fn mesh_init(dir: &Path, nodes: &str) {
    let out =
        proxy().args(["mesh", "init", "--dir"]).arg(dir).args(["--nodes", nodes]).output().expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_shipped_config_passes_proxy_check() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = std::env::temp_dir().join(format!("proxy-configs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(&repo.join("config"), &root.join("config"));
    copy_tree(&repo.join("examples"), &root.join("examples"));
    // What certs/README.md and examples/local-cluster/run.sh make.
    mesh_init(&root.join("certs"), "a,b");
    mesh_init(&root.join("examples/local-cluster/certs"), "a,b,c");
    let mut files = Vec::new();
    yaml_files(&root.join("config"), &mut files);
    yaml_files(&root.join("examples"), &mut files);
    files.retain(|f| !f.starts_with(root.join("examples/local-cluster/certs")));
    assert!(files.len() >= 6, "found {files:?}");
    for file in &files {
        let out = proxy().args(["check", "-c"]).arg(file).output().expect("check");
        assert!(
            out.status.success(),
            "{} does not pass proxy check:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
